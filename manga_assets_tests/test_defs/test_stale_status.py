"""The Dagster UI's stale status tells the same truth as the runner, in runs over many plates.

Three plates are acquired (catalogue, MAPS files, cubes: one range run per stage). Then one
galaxy's MAPS file changes on the server and ``manga-assets run`` is SIGKILLed as the cubes stage
begins: the manifest lists the new file, the plate's cubes come from the old one. The stale
status the UI shows (GraphQL ``staleStatusByPartition``, asked in process of the code location)
must say that plate's ``line_cubes`` is STALE and the other plates' FRESH, and after a full rerun
that all are FRESH. Each plate's data version must therefore follow its own content, although
Dagster copies one data version onto every partition of a range run
(:mod:`manga_assets.defs.data_versions`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
from dagster import DagsterInstance

from manga_assets.defs.constants import CRASH_AT_ENV
from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release, rewrite_galaxy

STALE_STATUS = """
query ($path: [String!]!, $partitions: [String!]) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      staleStatusByPartition(partitions: $partitions)
      staleCausesByPartition(partitions: $partitions) { reason dependency { path } }
    }
  }
}
"""


def stale_status(instance: DagsterInstance, asset: str, plates: list[str]) -> dict[str, str]:
    """Per plate, the stale status the UI shows for ``asset``, with its causes."""
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster_graphql.test.utils import execute_dagster_graphql

    origin = LoadableTargetOrigin(
        executable_path=sys.executable, module_name="manga_assets.definitions"
    )
    with in_process_test_workspace(instance, origin) as context:
        result = execute_dagster_graphql(
            context, STALE_STATUS, {"path": asset.split("/"), "partitions": plates}
        )
    assert not result.errors, result.errors
    node = result.data["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    causes = node["staleCausesByPartition"]
    return {
        plate: f"{status} {[cause['reason'] for cause in why]}" if why else status
        for plate, status, why in zip(plates, node["staleStatusByPartition"], causes, strict=True)
    }


def test_the_ui_shows_the_cubes_of_a_plate_whose_maps_file_changed_as_stale(tmp_path):
    spec = SyntheticReleaseSpec(n_plates=3, galaxies_per_plate=2, seed=3, lean=True)
    build_release(tmp_path / "release", spec)
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    with MirrorServer(tmp_path / "release") as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)

        def acquire() -> None:
            with DagsterInstance.from_config(str(home)) as instance:
                run_pipeline(settings, instance=instance, acquisition_only=True, log=lambda m: None)

        acquire()
        catalog = pd.read_parquet(data_dir / "products" / "catalog.parquet")
        plates = [str(plate) for plate in sorted(catalog["plate"].unique())]
        assert len(plates) == 3
        changed = catalog.loc[catalog["plate"] == int(plates[1]), "plateifu"].iloc[0]
        rewrite_galaxy(tmp_path / "release", spec, changed)

        env = {
            **os.environ, "DAGSTER_HOME": str(home), "MANGA_DATA_DIR": str(data_dir),
            "MANGA_SAS_URL": server.url, "MANGA_RELEASE": "DR17", CRASH_AT_ENV: "cubes",
        }  # fmt: skip
        killed = subprocess.run(
            [sys.executable, "-m", "manga_assets.cli", "run", "--acquisition-only",
             "--revalidate-after", "0"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

        # The runner's view: the manifest lists the new file, the features the old one.
        products = data_dir / "products"
        plate = plates[1]
        manifest = pd.read_parquet(products / "manifest" / f"{plate}.parquet")
        features = pd.read_parquet(products / "features" / f"{plate}.parquet")
        new_sha = manifest.set_index("plateifu").at[changed, "sha256"]
        assert features.set_index("plateifu").at[changed, "maps_sha256"] != new_sha

        # The UI's view.
        with DagsterInstance.from_config(str(home)) as instance:
            cubes = stale_status(instance, "line_cubes", plates)
            maps = stale_status(instance, "maps_files", plates)
        assert cubes[plate].startswith("STALE"), cubes
        assert {p: cubes[p] for p in plates if p != plate} == {
            p: "FRESH" for p in plates if p != plate
        }
        assert maps == {p: "FRESH" for p in plates}

        acquire()
        with DagsterInstance.from_config(str(home)) as instance:
            assert stale_status(instance, "line_cubes", plates) == {p: "FRESH" for p in plates}
        features = pd.read_parquet(products / "features" / f"{plate}.parquet")
        assert features.set_index("plateifu").at[changed, "maps_sha256"] == new_sha


@pytest.fixture(autouse=True)
def _no_crash_point_inherited(monkeypatch):
    monkeypatch.delenv(CRASH_AT_ENV, raising=False)
