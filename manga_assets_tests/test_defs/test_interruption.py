"""A run killed with SIGKILL at a stage boundary is repaired by the next run.

The kill point is the runner's test-only hook (``MANGA_ASSETS_CRASH_AT``): the real
``manga-assets run`` process kills itself as the named stage starts, so the test does not depend
on timing. The runs before and after the killed one run in this process on the same Dagster
instance and data directory, and stop after acquisition (the cubes are what is under test).
"""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy, read_cube
from manga_assets.defs.runner import CRASH_AT_ENV, run_pipeline
from manga_assets.sas.mirror import MirrorServer
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.releases import get_release
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release, rewrite_galaxy

pytestmark = pytest.mark.slow

MANGA_ASSETS = str(Path(sys.executable).with_name("manga-assets"))


def test_a_maps_file_changed_before_a_run_killed_at_cubes_reaches_the_cube_on_rerun(
    tmp_path, monkeypatch
):
    spec = SyntheticReleaseSpec(n_plates=2, galaxies_per_plate=3, seed=5, lean=True)
    release = build_release(tmp_path / "release", spec)
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    products = data_dir / "products"
    with MirrorServer(release.root) as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)

        def run_here(**options):
            return run_pipeline(settings, acquisition_only=True, log=lambda m: None, **options)

        run_here()
        catalog = pd.read_parquet(products / "catalog.parquet")
        plateifu = PlateIFU.parse(catalog["plateifu"].iloc[0])
        cube_path = products / "cubes" / str(plateifu.plate) / f"{plateifu}.npz"
        old_flux = read_cube(cube_path).flux
        rewrite_galaxy(tmp_path / "release", spec, str(plateifu))

        killed = subprocess.run(
            [MANGA_ASSETS, "run", "--acquisition-only", "--revalidate-after", "0"],
            env={
                **os.environ, CRASH_AT_ENV: "cubes", "MANGA_SAS_URL": server.url,
                "MANGA_DATA_DIR": str(data_dir),
            },  # fmt: skip
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        # The kill left the state of the issue: new file and manifest, old cube and features.
        manifest = pd.read_parquet(products / "manifest" / f"{plateifu.plate}.parquet")
        new_sha = manifest.set_index("plateifu").at[str(plateifu), "sha256"]
        features = pd.read_parquet(products / "features" / f"{plateifu.plate}.parquet")
        assert features.set_index("plateifu").at[str(plateifu), "maps_sha256"] != new_sha
        assert np.array_equal(read_cube(cube_path).flux, old_flux)

        rerun = run_here()  # within the revalidation window: no question to the server

    assert rerun.changed_plates == [str(plateifu.plate)]
    location = manifest.set_index("plateifu").at[str(plateifu), "location"]
    maps_path = data_dir / "sas" / location
    assert hashlib.sha256(maps_path.read_bytes()).hexdigest() == new_sha
    release_info = get_release("DR17")
    fresh = tmp_path / "fresh.npz"
    extract_galaxy(
        maps_path, fresh, ExtractionSettings(),
        expected_dapver=release_info.dapver, expected_daptype=release_info.daptype,
    )  # fmt: skip
    cube = read_cube(cube_path)
    assert np.array_equal(cube.flux, read_cube(fresh).flux)
    assert not np.array_equal(cube.flux, old_flux)
    features = pd.read_parquet(products / "features" / f"{plateifu.plate}.parquet")
    assert features.set_index("plateifu").at[str(plateifu), "maps_sha256"] == new_sha
