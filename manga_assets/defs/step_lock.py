"""The data directory's lock, held shared by every step of a Dagster run that writes products.

``manga-assets run`` holds the lock exclusively for its whole length (:mod:`manga_assets.lock`).
The runs Dagster launches itself (sensor, schedule, UI) go through the resources below: a step
holds the lock shared while it uses one, so it waits while a ``manga-assets run`` works on the
same directory, and that command refuses to start (or waits, with ``--wait``) while such a step
runs. Steps of one run, and of different Dagster runs, still run beside each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from manga_assets.lock import data_dir_lock


class HoldsDataDirLock:
    """Mixin for a resource with a ``data_dir`` field that steps write under."""

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator:
        if context.run is None:
            # A sensor's evaluation only reads (the catalogue); it must not block the daemon.
            yield self
            return
        # A process that holds the lock already (manga-assets run executing its steps in
        # process) does not take it again (manga_assets.lock keeps track).
        data_dir = Path(self.data_dir)  # type: ignore[attr-defined]  # the resource's field
        with data_dir_lock(data_dir, wait=True, shared=True, log=context.log.info):
            yield self
