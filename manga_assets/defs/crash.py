"""Kill points for the crash-injection tests (test-only).

With ``MANGA_ASSETS_CRASH_AT=<point>`` in its environment a run kills itself with SIGKILL when it
reaches ``<point>``, as the OOM killer or ``kill -9`` would: no ``finally`` block, no atexit, no
flush. The tests then rerun and compare the products with those of an uninterrupted run. Named
points (see where :func:`crash_point` is called): ``maps_files``, ``cubes``, ``models``,
``latents``, ``analyses`` (as the runner's stage starts), ``training_set_built`` (the training set
is published, Dagster has not recorded it), ``training`` (after the first epoch),
``report_written`` (the report is on disk, its provenance sidecar is not).
"""

from __future__ import annotations

import os
import signal

from manga_assets.defs.constants import CRASH_AT_ENV


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if the crash tests asked for ``name``; else do nothing."""
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_after_epoch(epoch: int) -> None:
    """The training's ``on_epoch_end`` callback: the "training" kill point, after epoch 1."""
    if epoch == 1:
        crash_point("training")
