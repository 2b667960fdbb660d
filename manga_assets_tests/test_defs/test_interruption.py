"""Crash-injection harness: a ``manga-assets run`` killed with SIGKILL is repaired by the next run.

A small release is run once to completion (state S0). Then one galaxy's MAPS file changes on the
server, and the *update* run that follows has work at every stage: download the new file,
extract its plate again, rebuild the training set, embed the plate with the kept models, redo
the analyses and the report. One uninterrupted update run from a copy of S0 is the baseline.
Each kill point then gets its own copy of S0: a real ``manga-assets run`` subprocess makes the
same update and is killed with SIGKILL at the point, then an in-process rerun (within the
revalidation window: it may not ask the server again) must leave products equal to the
baseline's and no temporary file anywhere in the data directory. The points: during the
download, after the MAPS files (as the cubes start), after the cubes (as the models' stage
starts), after the training set, after the models (as the latents start), after the latents (as
the analyses start) and during the report.

Kill points come from the runner's test-only hook (``MANGA_ASSETS_CRASH_AT``,
:mod:`manga_assets.defs.crash`), or for "download" from the loopback server itself: it sends
half of the new file and holds the connection, and the test kills the run once the download's
``.part`` exists. Nothing depends on timing.

The second scenario starts from another copy of S0 (the issue's case 2): ``manga-assets run
--epochs 2`` (a new model signature) is killed during training, then right after both models
were retrained as the latents stage begins, then as the analyses start; the rerun must embed
and analyse with the new models, and Dagster's data versions must say so; the rerun asks for
other neighbour settings and the run after it for the defaults, and each makes the neighbours
and the report again. What the training set and the analyses record decides, not the event log:
a training set truncated before the rerun of the report kill point is built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from manga_assets.cubes.cube_file import read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.defs.assets.analysis import (
    AgnSampleConfig,
    AnomalyConfig,
    NeighboursConfig,
    ReportConfig,
    UmapConfig,
)
from manga_assets.defs.constants import CRASH_AT_ENV
from manga_assets.defs.runner import RunSummary, run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.mirror.transfer_faults import Fault, FaultPlan
from manga_assets.provenance import (
    cubes_provenance,
    expected_latents_provenance,
    latents_provenance,
    read_provenance,
    read_sidecar,
    with_config,
)
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.releases import get_release
from manga_assets.sas.sidecar import part_path
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release, rewrite_galaxy

pytestmark = pytest.mark.slow

MANGA_ASSETS = str(Path(sys.executable).with_name("manga-assets"))
VARIANTS = ("ae", "vae")
# Tiny models (the quality gate cannot block on so few validation galaxies; --min-fev makes sure).
TRAINING = {"epochs": 1, "min_fev": -10.0}
UPDATE = ("--epochs", "1", "--min-fev", "-10", "--revalidate-after", "0")
TABLES = ("umap", "anomaly_scores", "neighbours")
# Names that exist only while a write is in flight (manga_assets.atomic, the downloader's .part).
TEMPORARY_MARKERS = (".tmp", ".link-", ".old-", ".part")


class _SignallingPlan(FaultPlan):
    """A fault plan that says when a fault was taken, i.e. when its response began."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()

    def take(self, path: str) -> Fault | None:
        fault = super().take(path)
        if fault is not None:
            self.taken.set()
        return fault


@dataclass
class Harness:
    root: Path
    server: MirrorServer
    plan: _SignallingPlan
    changed: PlateIFU
    maps_location: str  # the changed galaxy's MAPS file, relative to the SAS root
    old_flux: np.ndarray  # its cube before the change
    baseline: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    started: dict = field(default_factory=dict)  # kill point -> (data_dir, home, process)

    def copy_of_first_run(self, name: str) -> tuple[Path, Path]:
        """A data directory and Dagster home as the first (complete) run left them."""
        data_dir, home = self.root / name / "data", self.root / name / "dagster_home"
        shutil.copytree(self.root / "s0" / "data", data_dir, symlinks=True)
        shutil.copytree(self.root / "s0" / "dagster_home", home, symlinks=True)
        return data_dir, home

    def run_here(self, data_dir: Path, home: Path, **options) -> RunSummary:
        return run_here(self.server, data_dir, home, **options)

    def command(
        self, data_dir: Path, home: Path, crash_at: str | None, args: tuple[str, ...] = UPDATE
    ) -> subprocess.Popen:
        """A real ``manga-assets run``; by default the update, which asks about every file."""
        env = {
            **os.environ, "DAGSTER_HOME": str(home), "MANGA_DATA_DIR": str(data_dir),
            "MANGA_SAS_URL": self.server.url, "MANGA_TORCH_THREADS": "1",
        }  # fmt: skip
        env.pop(CRASH_AT_ENV, None)
        if crash_at:
            env[CRASH_AT_ENV] = crash_at
        return subprocess.Popen(
            [MANGA_ASSETS, "run", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def killed_during_download(self, data_dir: Path, home: Path) -> tuple[int, str]:
        self.plan.taken.clear()
        # Half the file, then silence for longer than the test can take: the run is mid-body.
        self.plan.add(self.maps_location, Fault.stall(600, fraction=0.5))
        part = part_path(data_dir / "sas" / self.maps_location)
        process = self.command(data_dir, home, None)
        try:
            started = self.plan.taken.wait(120)
            deadline = time.monotonic() + 60
            while started and not part.exists() and process.poll() is None:
                assert time.monotonic() < deadline, "the download never started its .part"
                time.sleep(0.01)  # waiting for a state, not for time to pass
            reached = started and part.exists()
        finally:
            process.kill()  # SIGKILL
            _, stderr = process.communicate(timeout=60)
        assert reached, f"the run never downloaded the changed file: {stderr[-2000:]}"
        return process.returncode, stderr

    def start(self, point: str) -> None:
        """Start the update that the hook kills at ``point``, on its own copy of S0.

        The killed runs of the hook's points need nothing from each other or from this process,
        so they run while this process reruns another point: on two cores that hides most of
        their time. (Not "download": its server-side stall must meet only its own run.)
        """
        if point not in self.started and point not in self.results:
            data_dir, home = self.copy_of_first_run(point)
            self.started[point] = (data_dir, home, self.command(data_dir, home, point))

    def killed_at(self, point: str) -> tuple[Path, Path, int, str]:
        if point == "download":
            data_dir, home = self.copy_of_first_run(point)
            return data_dir, home, *self.killed_during_download(data_dir, home)
        self.start(point)
        data_dir, home, process = self.started.pop(point)
        _, stderr = process.communicate(timeout=600)
        return data_dir, home, process.returncode, stderr

    def kill_and_rerun(self, point: str) -> dict:
        """Kill the update at ``point`` on a copy of S0, then rerun it; cached per point."""
        if point not in self.results:
            data_dir, home, returncode, stderr = self.killed_at(point)
            if point == "download":
                for other in KILL_POINTS:
                    if other != "download":
                        self.start(other)
            after_kill = {
                "manifest": _table(data_dir, "manifest", self.changed),
                "features": _table(data_dir, "features", self.changed),
                "flux": read_cube(_cube_path(data_dir, self.changed)).flux,
                "training_set": _training_set_fingerprint(data_dir),
                "latents_cube": _latents_cube_digest(data_dir, self.changed),
                "umap": read_provenance(data_dir / "products" / "ae" / "umap.parquet"),
            }
            if point == "report_written":
                # Everything but the report is current here, the training set included: a
                # truncated one must be noticed and built again (and the rerun spares a run).
                flux = data_dir / "products" / "training_set" / "flux.npy"
                with open(flux, "r+b") as stream:
                    stream.truncate(flux.stat().st_size // 2)
            rerun = self.run_here(data_dir, home)
            self.results[point] = {
                "returncode": returncode, "stderr": stderr, "after_kill": after_kill,
                "rerun": rerun, "data_dir": data_dir, "products": products_of(data_dir),
            }  # fmt: skip
        return self.results[point]


def run_here(server: MirrorServer, data_dir: Path, home: Path, **options) -> RunSummary:
    """A run in this process, on the Dagster instance at ``home``."""
    settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)
    instance = DagsterInstance.from_config(str(home))
    try:
        return run_pipeline(
            settings, instance=instance, log=lambda m: None, **{"training": TRAINING, **options}
        )
    finally:
        instance.dispose()


def _cube_path(data_dir: Path, plateifu: PlateIFU) -> Path:
    return data_dir / "products" / "cubes" / str(plateifu.plate) / f"{plateifu}.npz"


def _table(data_dir: Path, name: str, plateifu: PlateIFU) -> pd.DataFrame:
    return pd.read_parquet(data_dir / "products" / name / f"{plateifu.plate}.parquet")


def _latents_cube_digest(data_dir: Path, plateifu: PlateIFU) -> str:
    """The cube digest that ``plateifu``'s AE latents row records."""
    rows = pd.read_parquet(data_dir / "products" / "ae" / "latents" / f"{plateifu.plate}.parquet")
    return rows.set_index("plateifu").at[str(plateifu), "cube_digest"]


def _training_set_fingerprint(data_dir: Path) -> str:
    meta = data_dir / "products" / "training_set" / "meta.json"
    return pd.read_json(meta, typ="series")["fingerprint"]


def _cube_checksum(path: Path) -> str:
    """Checksum of a cube's arrays (the .npz bytes also hold the zip entries' write times)."""
    cube = read_cube(path)
    hashed = hashlib.sha256()
    for array in (cube.flux, cube.ivar, cube.mask, np.array(cube.lines)):
        hashed.update(str((array.dtype, array.shape)).encode())
        hashed.update(np.ascontiguousarray(array).tobytes())
    return hashed.hexdigest()


def products_of(data_dir: Path) -> dict:
    """What a run leaves that users read, in a form two runs can be compared in."""
    products = data_dir / "products"
    features = pd.concat(pd.read_parquet(p) for p in sorted((products / "features").glob("*")))
    state: dict = {
        "cubes": {p.stem: _cube_checksum(p) for p in sorted(products.glob("cubes/*/*.npz"))},
        "maps_sha256": dict(zip(features["plateifu"], features["maps_sha256"], strict=True)),
        "training_set": _training_set_fingerprint(data_dir),
        "agn_sample": read_provenance(products / "agn_sample.parquet"),
        "report": read_sidecar(products / "reports" / "agn_report.provenance.json"),
        "features": features,
    }
    for variant in VARIANTS:
        metrics = pd.read_json(products / "models" / variant / "metrics.json", typ="series")
        latents = pd.concat(
            pd.read_parquet(p) for p in sorted((products / variant / "latents").glob("*.parquet"))
        )
        state[variant] = {
            "model_id": metrics["model_id"],
            "latents": latents.sort_values("plateifu").reset_index(drop=True),
            "latent_table": read_provenance(products / variant / "latents.parquet"),
            **{name: read_provenance(products / variant / f"{name}.parquet") for name in TABLES},
            **{
                f"{name}_rows": pd.read_parquet(products / variant / f"{name}.parquet")
                for name in ("anomaly_scores", "neighbours")
            },
        }
    return state


def temporaries(data_dir: Path) -> list[Path]:
    """Files and folders under ``data_dir`` that only an unfinished write leaves."""
    found = []
    for folder, directories, files in os.walk(data_dir):
        for name in [*directories, *files]:
            path = Path(folder) / name
            unlinked_version = ".v-" in name and not any(
                os.path.islink(link) and os.readlink(link) == name
                for link in (Path(folder) / n for n in os.listdir(folder))
            )
            if any(marker in name for marker in TEMPORARY_MARKERS) or unlinked_version:
                found.append(path)
    return found


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    # Three usable galaxies: below UMAP's minimum, so the analyses take the PCA fallback and no
    # subprocess pays numba's compilation (~20 s of CPU); UMAP is not what is under test here.
    spec = SyntheticReleaseSpec(n_plates=2, galaxies_per_plate=2, seed=7, lean=True)
    build_release(root / "release", spec)
    plan = _SignallingPlan()
    server = MirrorServer(root / "release", faults=plan)
    with pytest.MonkeyPatch.context() as patch, server:
        patch.setenv("MANGA_TORCH_THREADS", "1")
        (root / "s0" / "dagster_home").mkdir(parents=True)
        first = run_here(server, root / "s0" / "data", root / "s0" / "dagster_home")
        assert not first.failed.size, first.failed
        catalog = pd.read_parquet(root / "s0" / "data" / "products" / "catalog.parquet")
        changed = PlateIFU.parse(catalog["plateifu"].iloc[0])
        manifest = _table(root / "s0" / "data", "manifest", changed).set_index("plateifu")
        harness = Harness(
            root, server, plan, changed, manifest.at[str(changed), "location"],
            read_cube(_cube_path(root / "s0" / "data", changed)).flux,
        )  # fmt: skip
        rewrite_galaxy(root / "release", spec, str(changed))

        data_dir, home = harness.copy_of_first_run("baseline")
        update = harness.run_here(data_dir, home, revalidate_after_hours=0)
        assert update.changed_plates == [str(changed.plate)]
        assert update.retrained == {"ae": False, "vae": False}
        assert update.embedded_plates == [str(changed.plate)]
        harness.baseline = products_of(data_dir)
        try:
            yield harness
        finally:
            for _, _, process in harness.started.values():  # started but not consumed (-k)
                process.kill()
                process.communicate()


KILL_POINTS = [
    "download", "cubes", "training_set_built", "models", "latents", "analyses", "report_written"
]  # fmt: skip


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_at_any_point_is_repaired_by_the_next_run(harness, point):
    result = harness.kill_and_rerun(point)
    assert result["returncode"] == -signal.SIGKILL, result["stderr"][-3000:]
    got, want = result["products"], harness.baseline

    assert got["cubes"] == want["cubes"]
    assert got["maps_sha256"] == want["maps_sha256"]
    assert got["training_set"] == want["training_set"]
    assert got["agn_sample"] == want["agn_sample"]
    assert got["report"] == want["report"]
    features = got["features"]
    for variant in VARIANTS:
        mine, theirs = got[variant], want[variant]
        assert mine["model_id"] == theirs["model_id"]
        # Every latents row was made by the published model, from the current cube.
        assert set(mine["latents"]["model_id"]) == {mine["model_id"]}
        pd.testing.assert_frame_equal(mine["latents"], theirs["latents"], rtol=1e-6)
        current = expected_latents_provenance(features, mine["model_id"])
        assert mine["latent_table"] == current
        assert mine["umap"] == with_config(current, UmapConfig().model_dump())
        assert mine["anomaly_scores"] == with_config(current, AnomalyConfig().model_dump())
        assert mine["neighbours"] == with_config(current, NeighboursConfig().model_dump())
        for name in TABLES:
            assert mine[name] == theirs[name], (variant, name)
        for name in ("anomaly_scores_rows", "neighbours_rows"):
            pd.testing.assert_frame_equal(mine[name], theirs[name], rtol=1e-6)
    assert got["agn_sample"] == with_config(
        cubes_provenance(features), AgnSampleConfig().model_dump()
    )
    assert got["report"]["config"] == ReportConfig().model_dump()
    assert temporaries(result["data_dir"]) == []


def test_the_kills_struck_where_they_were_meant_to(harness):
    """Each killed run left the state its kill point names, so the reruns had that to repair."""
    downloaded = harness.kill_and_rerun("download")["after_kill"]
    at_cubes = harness.kill_and_rerun("cubes")["after_kill"]
    old_sha = downloaded["manifest"].set_index("plateifu").at[str(harness.changed), "sha256"]
    new_sha = at_cubes["manifest"].set_index("plateifu").at[str(harness.changed), "sha256"]
    # Killed mid-download: the manifest still lists the old file.
    assert old_sha != new_sha
    assert new_sha == harness.baseline["maps_sha256"][str(harness.changed)]
    # Killed after the MAPS files: new manifest, old features and cube (the case 1).
    features = at_cubes["features"].set_index("plateifu")
    assert features.at[str(harness.changed), "maps_sha256"] == old_sha
    assert np.array_equal(at_cubes["flux"], harness.old_flux)
    # Killed after the training set, before Dagster recorded it: the set records its cubes, so
    # the rerun did not build it again; killed before it, the rerun did.
    built = harness.kill_and_rerun("training_set_built")
    assert built["after_kill"]["training_set"] == harness.baseline["training_set"]
    assert not built["rerun"].built_training_set
    assert downloaded["training_set"] != harness.baseline["training_set"]
    assert harness.kill_and_rerun("download")["rerun"].built_training_set
    # Killed as the models' stage starts (it builds the training set) and as the latents start:
    # the changed galaxy's latents still come from its old cube; as the analyses start, the
    # latents are new and the analyses were made from the old ones.
    old_latents = downloaded["latents_cube"]
    at_models = harness.kill_and_rerun("models")["after_kill"]
    assert at_models["training_set"] == downloaded["training_set"]
    at_latents = harness.kill_and_rerun("latents")["after_kill"]
    assert at_latents["training_set"] == harness.baseline["training_set"]
    assert at_models["latents_cube"] == at_latents["latents_cube"] == old_latents
    at_analyses = harness.kill_and_rerun("analyses")
    assert at_analyses["after_kill"]["latents_cube"] != old_latents
    assert at_analyses["after_kill"]["umap"] == downloaded["umap"] != harness.baseline["ae"]["umap"]
    assert at_analyses["rerun"].embedded_plates == []
    # Killed while writing the report: the rerun made only the report again (and the training
    # set, truncated before it, with the same contents: the models and latents stay current).
    assert harness.kill_and_rerun("report_written")["rerun"].analysed == ["agn_report"]


def test_a_truncated_training_set_is_built_again(harness):
    result = harness.kill_and_rerun("report_written")
    rerun = result["rerun"]
    assert rerun.built_training_set
    assert rerun.retrained == {"ae": False, "vae": False} and rerun.embedded_plates == []
    meta = json.loads((result["data_dir"] / "products" / "training_set" / "meta.json").read_text())
    assert meta["made_from"]["cubes"] == cubes_provenance(result["products"]["features"])["cubes"]
    # (Its fingerprint equals the baseline's: test_a_run_killed_at_any_point_...[report_written].)


def test_a_maps_file_changed_before_a_run_killed_at_cubes_reaches_the_cube_on_rerun(harness):
    result = harness.kill_and_rerun("cubes")
    assert result["rerun"].changed_plates == [str(harness.changed.plate)]
    data_dir = result["data_dir"]
    maps_path = data_dir / "sas" / harness.maps_location
    new_sha = harness.baseline["maps_sha256"][str(harness.changed)]
    assert hashlib.sha256(maps_path.read_bytes()).hexdigest() == new_sha
    release = get_release("DR17")
    fresh = harness.root / "fresh.npz"
    extract_galaxy(
        maps_path, fresh, ExtractionSettings(),
        expected_dapver=release.dapver, expected_daptype=release.daptype,
    )  # fmt: skip
    cube = read_cube(_cube_path(data_dir, harness.changed))
    assert np.array_equal(cube.flux, read_cube(fresh).flux)
    assert not np.array_equal(cube.flux, harness.old_flux)


# --- A run with a new model signature, killed during and after retraining -------------------

RETRAIN = ("--epochs", "2", "--min-fev", "-10")
SECOND = {**TRAINING, "epochs": 2}


def model_id(products: Path, variant: str) -> str:
    return pd.read_json(products / "models" / variant / "metrics.json", typ="series")["model_id"]


def latent_rows(products: Path, variant: str) -> pd.DataFrame:
    return pd.concat(
        pd.read_parquet(path) for path in sorted((products / variant / "latents").glob("*.parquet"))
    )


def every_features(products: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((products / "features").glob("*.parquet")))


def data_versions(home: Path, plate: str) -> tuple[dict[str, dict], dict[str, str]]:
    """Per model: the tags of ``plate``'s latest latents materialisation, and the model's data
    version, from the Dagster instance at ``home``."""
    with DagsterInstance.from_config(str(home)) as instance:
        tags, models = {}, {}
        for variant in VARIANTS:
            latents = instance.get_latest_data_version_record(
                AssetKey([variant, "latents"]), partition_key=plate
            )
            tags[variant] = dict(latents.asset_materialization.tags)
            model = instance.get_latest_data_version_record(AssetKey([variant, "model"]))
            models[variant] = model.asset_materialization.tags["dagster/data_version"]
        return tags, models


@pytest.fixture(scope="module")
def killed_after_retraining(harness):
    data_dir, home = harness.copy_of_first_run("retrain")
    products = data_dir / "products"
    plate = sorted(p.stem for p in (products / "features").glob("*.parquet"))[0]
    states: dict = {}

    def killed_at(stage: str) -> subprocess.CompletedProcess:
        process = harness.command(data_dir, home, stage, RETRAIN)
        stdout, stderr = process.communicate(timeout=600)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    states["old_ids"] = {v: model_id(products, v) for v in VARIANTS}

    states["killed_in_training"] = killed_at("training")
    states["ids_after_training_kill"] = {v: model_id(products, v) for v in VARIANTS}

    states["killed_at_latents"] = killed_at("latents")
    states["resumed_from"] = {
        v: json.loads((products / "models" / v / "metrics.json").read_text())["resumed_from_epoch"]
        for v in VARIANTS
    }
    states["ids_after_kill"] = {v: model_id(products, v) for v in VARIANTS}
    states["rows_after_kill"] = {v: latent_rows(products, v) for v in VARIANTS}
    states["tags_after_kill"], states["model_versions_after_kill"] = data_versions(home, plate)

    states["killed_at_analyses"] = killed_at("analyses")
    states["umap_after_second_kill"] = {
        v: read_provenance(products / v / "umap.parquet") for v in VARIANTS
    }
    states["rows_after_second_kill"] = {v: latent_rows(products, v) for v in VARIANTS}

    # The rerun also asks for other neighbour settings; the run after it for the defaults again.
    states["rerun"] = harness.run_here(
        data_dir, home, training=SECOND, analyses={"neighbours": {"k": 1}}
    )
    states["tags_after_rerun"], states["model_versions_after_rerun"] = data_versions(home, plate)
    states["k1"] = {v: read_provenance(products / v / "neighbours.parquet") for v in VARIANTS}
    states["k1_rows"] = pd.read_parquet(products / "vae" / "neighbours.parquet")
    states["defaults"] = harness.run_here(data_dir, home, training=SECOND)
    states["k10"] = {v: read_provenance(products / v / "neighbours.parquet") for v in VARIANTS}
    states["temporaries"] = temporaries(data_dir)
    return products, states


def test_a_kill_during_training_publishes_nothing_and_the_next_run_resumes(
    killed_after_retraining,
):
    _, states = killed_after_retraining
    killed = states["killed_in_training"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert states["ids_after_training_kill"] == states["old_ids"]
    # The first model was killed after its first epoch; the next run went on from its checkpoint.
    assert sorted(states["resumed_from"].values(), key=str) == [1, None]


def test_the_kill_left_latents_of_the_old_models_beside_the_new_models(killed_after_retraining):
    _, states = killed_after_retraining
    killed = states["killed_at_latents"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    for variant in VARIANTS:
        assert states["ids_after_kill"][variant] != states["old_ids"][variant]
        assert set(states["rows_after_kill"][variant]["model_id"]) == {states["old_ids"][variant]}


def test_dagster_sees_the_old_latents_as_made_from_another_model(killed_after_retraining):
    _, states = killed_after_retraining
    for variant in VARIANTS:
        model_input = f"dagster/input_data_version/{variant}/model"
        before, after = states["tags_after_kill"][variant], states["tags_after_rerun"][variant]
        # The model's data version is its model_id; the latents recorded the old one as input.
        assert states["model_versions_after_kill"][variant] == states["ids_after_kill"][variant]
        assert before[model_input] == states["old_ids"][variant]
        assert before[model_input] != states["model_versions_after_kill"][variant]
        assert after[model_input] == states["model_versions_after_rerun"][variant]
        assert after["dagster/data_version"] != before["dagster/data_version"]


def test_a_kill_before_the_analyses_leaves_current_latents_and_stale_analyses(
    killed_after_retraining,
):
    _, states = killed_after_retraining
    killed = states["killed_at_analyses"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    for variant in VARIANTS:
        rows = states["rows_after_second_kill"][variant]
        assert set(rows["model_id"]) == {states["ids_after_kill"][variant]}
        assert states["umap_after_second_kill"][variant]["model_id"] == states["old_ids"][variant]


def test_the_rerun_embeds_and_analyses_with_the_current_models(killed_after_retraining):
    products, states = killed_after_retraining
    rerun = states["rerun"]
    assert rerun.retrained == {"ae": False, "vae": False}
    assert rerun.embedded_plates == [], "the second killed run embedded every plate already"
    assert "agn_report" in rerun.analysed and "ae/umap" in rerun.analysed
    features = every_features(products)
    configs = {
        "umap": UmapConfig().model_dump(),
        "anomaly_scores": AnomalyConfig().model_dump(),
        "neighbours": NeighboursConfig().model_dump(),
    }
    for variant in VARIANTS:
        current = model_id(products, variant)
        rows = latent_rows(products, variant)
        assert set(rows["model_id"]) == {current}
        assert len(rows) == (features["status"] == "ok").sum()
        gathered = pd.read_parquet(products / variant / "latents.parquet")
        expected = expected_latents_provenance(features, current)
        assert latents_provenance(gathered) == expected
        assert read_provenance(products / variant / "latents.parquet") == expected
        for name, config in configs.items():
            recorded = read_provenance(products / variant / f"{name}.parquet")
            assert recorded == with_config(expected, config), name
    report = read_sidecar(products / "reports" / "agn_report.provenance.json")
    assert report["inputs"]["vae/neighbours"] == with_config(
        expected_latents_provenance(features, model_id(products, "vae")), configs["neighbours"]
    )
    assert report["inputs"]["agn_sample"] == read_provenance(products / "agn_sample.parquet")
    assert states["temporaries"] == []


def test_a_run_after_that_does_only_what_its_settings_call_for(killed_after_retraining):
    """Nothing left stale by the kills is made again: only the neighbours, whose settings differ
    from the rerun's, and the report that shows them (a run with nothing at all to do is
    test_incremental's)."""
    _, states = killed_after_retraining
    after = states["defaults"]
    assert after.retrained == {"ae": False, "vae": False} and not after.built_training_set
    assert after.embedded_plates == []
    assert after.analysed == ["ae/neighbours", "vae/neighbours", "agn_report"]
    assert after.report == states["rerun"].report


def test_analyses_are_made_again_when_their_settings_change(killed_after_retraining):
    _, states = killed_after_retraining
    for variant in VARIANTS:
        assert states["k1"][variant]["config"] == {"k": 1}
        assert states["k10"][variant]["config"] == NeighboursConfig().model_dump()
    assert states["k1_rows"].groupby("plateifu").size().eq(1).all()
    # Back to the default settings: the neighbours and the report again, and only them.
    assert states["defaults"].analysed == ["ae/neighbours", "vae/neighbours", "agn_report"]
    assert not states["defaults"].built_training_set
