"""Shared fixtures: small synthetic releases, served on 127.0.0.1 as a SAS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from manga_assets.settings import Settings

# sdss-access creates $SAS_BASE_DIR on import; keep it out of the user's home during tests.
os.environ.setdefault(
    "SAS_BASE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "manga_sas_base")
)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core. A step's torch (and the runs it starts, which
    # inherit this) then takes one thread: with more, OpenMP threads spin at every barrier while
    # the other worker holds the core, and a two-minute training took ten.
    os.environ.setdefault("MANGA_TORCH_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def build_small_release(root: Path, release: str = "DR17", **overrides):
    from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release

    spec = SyntheticReleaseSpec(
        release=release,
        n_plates=overrides.pop("n_plates", 2),
        galaxies_per_plate=overrides.pop("galaxies_per_plate", 5),
        seed=overrides.pop("seed", 7),
        lean=overrides.pop("lean", True),
        **overrides,
    )
    return build_release(root, spec)


@pytest.fixture(scope="session")
def dr17_release(tmp_path_factory):
    """A two-plate DR17 release with every planted fault."""
    return build_small_release(tmp_path_factory.mktemp("dr17"), faults=True)


@pytest.fixture
def served(dr17_release, tmp_path):
    from manga_assets.mirror.server import MirrorServer

    with MirrorServer(dr17_release.root, access_log=tmp_path / "access.log") as server:
        yield server


@pytest.fixture
def settings(served, tmp_path) -> Settings:
    return Settings(sas_url=served.url, release="DR17", data_dir=tmp_path / "data")
