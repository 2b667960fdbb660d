"""A small pipeline run's data directory, and explorers serving copies of it.

The products come from the real pipeline (`run_pipeline` on a two-plate synthetic release, short
training): the explorer reads exactly what a run writes. They are built once per test session,
shared by the pytest-xdist workers through a lock, and every test module serves its own copy, so
that the labels one module posts never reach another.
"""

from __future__ import annotations

import fcntl
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from manga_assets.cli import DEMO_TRAINING
from manga_assets_tests.conftest import build_small_release

# Enough to publish both models and score every galaxy; what the explorer shows of a model does
# not depend on how well it was trained.
TRAINING = {**DEMO_TRAINING, "epochs": 2}


def _build(root: Path) -> Path:
    from dagster import DagsterInstance

    from manga_assets.defs.runner import run_pipeline
    from manga_assets.mirror.server import MirrorServer
    from manga_assets.settings import Settings

    release = build_small_release(root / "release", n_plates=2, galaxies_per_plate=6, seed=0)
    with MirrorServer(release.root) as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=root / "data")
        run_pipeline(
            settings,
            training=TRAINING,
            instance=DagsterInstance.ephemeral(),
            log=lambda message: None,
        )
    return root / "data"


@pytest.fixture(scope="session")
def pipeline_data(tmp_path_factory, worker_id: str) -> Path:
    """The data directory of one small pipeline run (read-only: copy it before writing)."""
    if worker_id == "master":
        return _build(tmp_path_factory.mktemp("explorer_pipeline"))
    # Under pytest-xdist the workers' temporary roots share this parent: the first builds.
    shared = tmp_path_factory.getbasetemp().parent / "explorer_pipeline"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / ".done").exists():
            _build(shared)
            (shared / ".done").touch()
    return shared / "data"


def copy_data_dir(source: Path, target: Path) -> Path:
    """A writable copy of a data directory's products (labels and image caches go there)."""
    shutil.copytree(source / "products", target / "products", symlinks=True)
    return target


@dataclass
class Running:
    url: str
    data_dir: Path
    server: object


@contextmanager
def serving(data_dir: Path, reviewer: str = "tester") -> Iterator[Running]:
    """An explorer on an ephemeral port of 127.0.0.1, in a thread of this process."""
    from manga_assets.explorer.server import make_server

    server = make_server(data_dir, host="127.0.0.1", port=0, reviewer=reviewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield Running(f"http://{host}:{port}", data_dir, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def data_dir(pipeline_data, tmp_path_factory) -> Path:
    return copy_data_dir(pipeline_data, tmp_path_factory.mktemp("explorer_data"))


@pytest.fixture(scope="module")
def explorer(data_dir) -> Iterator[Running]:
    with serving(data_dir) as running:
        yield running
