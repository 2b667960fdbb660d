"""The acquisition slice on deploy/dagster.yaml: PostgreSQL storage on a real local server."""

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.settings import Settings
from manga_assets_tests.conftest import build_small_release
from manga_assets_tests.test_deploy.postgres import local_postgres, server_bin_dir

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytest.importorskip("dagster_postgres", reason="pip install dagster-postgres")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        server_bin_dir() is None, reason="no PostgreSQL server: apt-get install -y postgresql"
    ),
]


def test_runs_and_materialisations_are_recorded_in_postgres(tmp_path, monkeypatch):
    release = build_small_release(tmp_path / "release", n_plates=2, galaxies_per_plate=4)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with local_postgres() as postgres, MirrorServer(release.root) as server:
        for name, value in postgres.env().items():
            monkeypatch.setenv(name, value)
        settings = Settings(sas_url=server.url, release="DR17", data_dir=tmp_path / "data")

        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            summary = run_pipeline(
                settings, instance=instance, log=lambda message: None, acquisition_only=True
            )
            plates = sorted(summary.plates)
            assert len(plates) == 2 and summary.cubes > 0

            runs = instance.get_runs()
            assert sorted(run.run_id for run in runs) == sorted(summary.run_ids)
            assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
            for key in ("maps_files", "line_cubes"):
                materialised = instance.get_materialized_partitions(dg.AssetKey(key))
                assert sorted(materialised) == plates, key
            assert instance.get_latest_materialization_event(dg.AssetKey("catalog")) is not None
            # The download pool took its limit from the deploy file's pools.default_limit.
            pool = instance.event_log_storage.get_concurrency_info("sas_download")
            assert pool.slot_count == 2

        # A fresh instance on the same file reads the same history back from the server.
        with dg.DagsterInstance.get() as again:
            assert len(again.get_runs()) == len(summary.run_ids)
            assert sorted(again.get_dynamic_partitions("plates")) == plates

        # And so does plain SQL: the rows are in PostgreSQL, nothing went to SQLite.
        connection = postgres.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
                assert cursor.fetchone()[0] == len(summary.run_ids)
                cursor.execute(
                    "SELECT DISTINCT partition FROM event_logs WHERE dagster_event_type = "
                    "'ASSET_MATERIALIZATION' AND asset_key = %s",
                    (dg.AssetKey("line_cubes").to_string(),),
                )
                assert sorted(row[0] for row in cursor.fetchall()) == plates
                cursor.execute(
                    "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'plates'"
                )
                assert sorted(row[0] for row in cursor.fetchall()) == plates
        finally:
            connection.close()
    assert not list(home.rglob("*.db")), "SQLite storage was created beside the deploy config"

    features = pd.concat(
        pd.read_parquet(settings.data_dir / "products" / "features" / f"{plate}.parquet")
        for plate in plates
    )
    cubes = list((settings.data_dir / "products" / "cubes").rglob("*.npz"))
    assert len(cubes) == int((features["status"] == "ok").sum()) == summary.cubes
