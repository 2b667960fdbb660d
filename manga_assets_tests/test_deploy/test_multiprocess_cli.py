"""The acquisition graph through the Dagster CLI with the multiprocess executor.

``materialize()`` and ``execute_in_process`` run every step in one process; a deployment runs
each step in its own process, forked from the executor's forkserver. These runs prove that the
code location loads there, that resources come from the environment, and that the IO managers
hand products between processes.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from manga_assets.mirror.server import MirrorServer
from manga_assets_tests.conftest import build_small_release

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
MULTIPROCESS = {"execution": {"config": {"max_concurrent": 2}}}


def materialize(env: dict[str, str], select: str, partition: str | None = None) -> None:
    command = [
        DAGSTER, "asset", "materialize", "-m", "manga_assets.definitions",
        "--select", select, "--config-json", json.dumps(MULTIPROCESS),
    ]  # fmt: skip
    if partition:
        command += ["--partition", partition]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(command[1:])}:\n{done.stderr[-4000:]}"


def step_processes(instance: dg.DagsterInstance, run_id: str) -> tuple[int, dict[str, int]]:
    """The run's orchestrating pid and, per step, the pid that executed it."""
    orchestrator, steps, launched = None, {}, set()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_START:
            orchestrator = event.pid
        elif event.event_type == dg.DagsterEventType.STEP_WORKER_STARTING:
            launched.add(event.step_key)
        elif event.event_type == dg.DagsterEventType.STEP_START:
            steps[event.step_key] = event.pid
    assert launched == set(steps), "every step was launched as a subprocess by the executor"
    return orchestrator, steps


def test_multiprocess_runs_through_the_cli(tmp_path, monkeypatch):
    release = build_small_release(tmp_path / "release", n_plates=2, galaxies_per_plate=4)
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    # The checkout's own instance config: SQLite storage and the sas_download pool limit.
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with MirrorServer(release.root) as server:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "MANGA_DATA_DIR": str(data),
            "MANGA_SAS_URL": server.url,
            "MANGA_RELEASE": "DR17",
            "MANGA_TORCH_THREADS": "1",
        }
        materialize(env, "catalog")
        catalog = pd.read_parquet(data / "products" / "catalog.parquet")
        plates = sorted({str(plate) for plate in catalog["plate"]})
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("plates", plates)
        for plate in plates:
            materialize(env, "maps_files,line_cubes", partition=plate)
        materialize(env, "training_set")

    products = data / "products"
    features = pd.concat(pd.read_parquet(products / "features" / f"{p}.parquet") for p in plates)
    ok = features[features["status"] == "ok"]
    assert len(plates) == 2 and set(features["plateifu"]) == set(catalog["plateifu"])
    assert len(ok) >= len(catalog) - 1
    for plate in plates:
        manifest = pd.read_parquet(products / "manifest" / f"{plate}.parquet")
        assert (manifest["status"] == "ok").all() and manifest["bytes"].gt(0).all()
    cubes = sorted(path.stem for path in (products / "cubes").rglob("*.npz"))
    assert cubes == sorted(ok["plateifu"])
    index = pd.read_parquet(products / "training_set" / "index.parquet")
    assert sorted(index["plateifu"]) == cubes

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 + len(plates)
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        step_keys = set()
        for run in runs:
            orchestrator, steps = step_processes(instance, run.run_id)
            assert steps, run.run_id
            # Each step ran in its own process, none in the process that orchestrated the run.
            assert orchestrator not in steps.values()
            assert len(set(steps.values())) == len(steps)
            step_keys |= set(steps)
        assert {"catalog", "maps_files", "line_cubes", "training_set"} <= step_keys
        for key in ("maps_files", "line_cubes"):
            assert sorted(instance.get_materialized_partitions(dg.AssetKey(key))) == plates
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("line_cubes"), "cube_sanity")]
        )
        assert check[dg.AssetCheckKey(dg.AssetKey("line_cubes"), "cube_sanity")].status.value == (
            "SUCCEEDED"
        )
