"""`manga-assets run` as a user runs it, against a loopback SAS that needs a password.

The served release has two good plates and one plate whose only MAPS file is truncated on the
server. A real command-line run (a subprocess) must exit 0 with the good plates' cubes, record
the bad plate with its reason in its manifest, features and an asset check, and never let the
password out of the process. The runs stop after acquisition (``--acquisition-only``): what
follows reads only the cubes, and the models' own tests cover training.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance

from manga_assets.mirror.server import MirrorServer
from manga_assets_tests.conftest import build_small_release

pytestmark = pytest.mark.slow

MANGA_ASSETS = str(Path(sys.executable).with_name("manga-assets"))
PASSWORD = "s3cr3t-pw-42"


def run_cli(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MANGA_ASSETS, "run", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def bad_plate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    release = build_small_release(root / "release", n_plates=3, galaxies_per_plate=4, seed=3)
    bad_plate = release.plates[2]
    bad_files = sorted(release.root.rglob(f"manga-{bad_plate}-*-MAPS-*.fits.gz"))
    assert bad_files, "the release writes MAPS files for every plate"
    for path in bad_files[1:]:
        path.unlink()  # the bad plate's only MAPS file is the first one...
    path = bad_files[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # ...and it is truncated
    with MirrorServer(release.root, credentials=("user", PASSWORD)) as server:
        port = server.url.split(":")[2].split("/")[0]
        env = {
            **os.environ,
            "MANGA_SAS_URL": f"http://user:{PASSWORD}@127.0.0.1:{port}/sas",
            "MANGA_DATA_DIR": str(root / "data"),
            "DAGSTER_HOME": str(root / "dagster_home"),
        }
        (root / "dagster_home").mkdir()
        first = run_cli(env, "--acquisition-only")
        strict = run_cli(env, "--acquisition-only", "--strict")
    return root, release, bad_plate, first, strict


def test_a_bad_plate_beside_good_ones_exits_0_with_their_cubes(bad_plate_run):
    root, release, bad_plate, first, _ = bad_plate_run
    assert first.returncode == 0, first.stderr[-3000:]
    products = root / "data" / "products"
    for plate in release.plates[:2]:
        features = pd.read_parquet(products / "features" / f"{plate}.parquet")
        ok = features[features["status"] == "ok"]
        assert len(ok) > 0 and all(
            (products / "cubes" / str(plate) / f"{p}.npz").exists() for p in ok["plateifu"]
        )
    manifest = pd.read_parquet(products / "manifest" / f"{bad_plate}.parquet")
    features = pd.read_parquet(products / "features" / f"{bad_plate}.parquet")
    corrupt = manifest[manifest["status"] == "corrupt"]
    assert len(corrupt) == 1 and "truncated" in corrupt["reason"].iloc[0]
    assert (features["status"] != "ok").all() and features["reason"].str.len().gt(0).all()
    assert f"plates without any cube (see their manifests): {bad_plate}" in first.stdout
    assert f"{corrupt['plateifu'].iloc[0]}: corrupt:" in first.stdout


def test_the_bad_plate_is_shown_by_an_asset_check(bad_plate_run, monkeypatch):
    root, _, bad_plate, _, _ = bad_plate_run
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    instance = DagsterInstance.get()
    records = instance.get_records_for_run
    evaluations = {}
    for run in instance.get_runs():
        for record in records(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            evaluations[evaluation.check_name] = evaluation
    for check in ("plates_without_maps", "plates_without_cubes"):
        assert not evaluations[check].passed, check
        assert f"plate {bad_plate}:" in evaluations[check].description


def test_strict_turns_a_failed_galaxy_into_a_non_zero_exit(bad_plate_run):
    _, _, bad_plate, _, strict = bad_plate_run
    assert strict.returncode == 1
    assert "--strict" in strict.stderr and "have no cube" in strict.stderr


def test_the_password_never_leaves_the_process(bad_plate_run):
    root, _, _, first, strict = bad_plate_run
    for run in (first, strict):
        assert PASSWORD not in run.stdout and PASSWORD not in run.stderr
    leaks = [
        path
        for folder in (root / "data", root / "dagster_home")
        for path in folder.rglob("*")
        if path.is_file() and PASSWORD.encode() in path.read_bytes()
    ]
    assert not leaks, f"the password was written to {leaks}"
    # The run did reach the server (authenticated) and the event log is where it should be.
    assert list((root / "dagster_home").rglob("*.db"))
