"""Steps on Celery workers through a real Redis broker (deploy/README.md, "Celery").

One module fixture starts a Redis server and two ``dagster-celery`` workers on the Celery code
location (``manga_assets.defs.celery_location``), then:

- runs the acquisition and latents jobs in this process on a tiny release (the reference), with
  two seeded, untrained models published in its data directory (inference is under test here,
  not training: the models' own tests train);
- runs ``acquisition_job`` with ``dagster job execute`` on the Celery code location (the
  command of deploy/README.md), then ``latents_job`` from this process (``dg.execute_job``),
  over the same plate range, in another data directory holding a copy of the same models;
- kills one worker (its whole process group, SIGKILL) as soon as a latents step has started on
  it; Redis gives the step's task back and the other worker runs it again.

The tests then read the event log and compare the products. Every service is killed when the
module ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from manga_assets.atomic import clean_temporaries
from manga_assets.defs.definitions import build_definitions
from manga_assets.defs.sensors import plate_range_tags
from manga_assets.layout import DataLayout
from manga_assets.mirror.server import MirrorServer
from manga_assets.provenance import (
    LATENTS_CODE_VERSION,
    latents_file_provenance,
    plate_cube_digests,
    read_provenance,
)
from manga_assets.settings import Settings
from manga_assets_tests.conftest import build_small_release
from manga_assets_tests.test_deploy.celery_services import (
    CELERY_WORKER_CONFIG,
    CODE_LOCATION,
    REPO,
    CeleryWorker,
    celery_workers,
    local_redis,
    redis_server_binary,
    wait_until_ready,
    worker_config,
)

pytest.importorskip("dagster_celery", reason='pip install -e ".[dev]" (dagster-celery)')
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        redis_server_binary() is None, reason="no Redis server: apt-get install -y redis-server"
    ),
]

DAGSTER = str(Path(sys.executable).with_name("dagster"))
VARIANTS = ("ae", "vae")
# A killed worker's task is given back after this many seconds. It must exceed every step here,
# or Redis also gives back the task of a step still running and it runs twice: with torch
# imported by the workers before they fork, a latents step takes ~1 s, a few under load.
VISIBILITY_TIMEOUT_S = 15


@dataclass
class CeleryRuns:
    plates: list[str]
    reference: Path  # products of the in-process runs
    products: Path  # products of the Celery runs
    run_ids: dict[str, str]  # job name -> run id of the Celery run
    orchestrators: dict[str, int]  # job name -> pid of `dagster job execute`
    workers: dict[str, set[int]]  # worker hostname -> its processes
    killed: str  # hostname of the killed worker
    killed_step: str
    instance_home: Path
    failures: list[str] = field(default_factory=list)


def publish_seeded_models(data_dir: Path) -> None:
    """An untrained, seeded model of each variant, published as the model asset publishes one."""
    import torch

    from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig
    from manga_assets.model.checkpoint import save_model

    for variant in VARIANTS:
        torch.manual_seed(0)
        config = ModelConfig(variant=variant, latent_dim=8)
        metrics = {"model_id": f"seeded-{variant}"}
        save_model(DataLayout(data_dir).model_dir(variant), ConvLSTMAutoencoder(config), config,
                   metrics)  # fmt: skip


def run_in_process(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """The reference: every job in this process; returns the plates."""
    defs = build_definitions(settings)

    def execute(job: str, **kwargs) -> None:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)
        assert result.success, job

    execute("catalog_job")
    plates = catalog_plates(settings.data_dir)
    instance.add_dynamic_partitions("plates", plates)
    tags = plate_range_tags(plates[0], plates[-1])
    execute("acquisition_job", tags=tags)
    publish_seeded_models(settings.data_dir)
    execute("latents_job", tags=tags)
    return plates


def catalog_plates(data_dir: Path) -> list[str]:
    catalog = pd.read_parquet(data_dir / "products" / "catalog.parquet")
    return sorted({str(plate) for plate in catalog["plate"]})


def execute_command(job: str, plates: list[str]) -> list[str]:
    """The command a user runs to execute ``job`` on the Celery workers (deploy/README.md)."""
    return [
        DAGSTER, "job", "execute", "-m", CODE_LOCATION, "-j", job,
        "--tags", json.dumps(plate_range_tags(plates[0], plates[-1])),
    ]  # fmt: skip


class WorkerKiller(threading.Thread):
    """Kills the worker on which a step of the run starts first (its process group, SIGKILL)."""

    def __init__(self, instance: dg.DagsterInstance, job: str, workers: list[CeleryWorker]):
        super().__init__(daemon=True)
        self.instance, self.job = instance, job
        self.by_pid = {pid: worker for worker in workers for pid in worker.pids}
        self.killed: CeleryWorker | None = None
        self.step: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            runs = self.instance.get_runs(dg.RunsFilter(job_name=self.job), limit=1)
            logs = (
                self.instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
                if runs
                else []
            )
            for entry in logs:
                worker = self.by_pid.get(entry.dagster_event.pid)
                if worker is not None:
                    worker.kill()
                    self.killed, self.step = worker, entry.dagster_event.step_key
                    return
            time.sleep(0.05)


@pytest.fixture(scope="module")
def celery_runs(tmp_path_factory) -> CeleryRuns:
    root = tmp_path_factory.mktemp("celery")
    release = build_small_release(root / "release", n_plates=2, galaxies_per_plate=3, seed=3)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    reference_dir, data_dir = root / "in_process", root / "celery"

    with (
        pytest.MonkeyPatch.context() as patch,
        MirrorServer(release.root) as server,
        local_redis(root / "redis") as redis,
    ):
        patch.setenv("DAGSTER_HOME", str(home))
        patch.setenv("MANGA_TORCH_THREADS", "1")
        env = {
            **os.environ,
            **redis.env(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DAGSTER_HOME": str(home),
            "MANGA_DATA_DIR": str(data_dir),
            "MANGA_SAS_URL": server.url,
            "MANGA_RELEASE": "DR17",
            "MANGA_TORCH_THREADS": "1",
        }
        # Workers look for the tasks of dead workers every second. A worker killed while it held
        # the lock on that scan leaves it locked for unacked_mutex_expire (5 min by default).
        config = worker_config(
            root / "celery.yaml",
            visibility_timeout=VISIBILITY_TIMEOUT_S,
            unacked_restore_interval=1,
            unacked_mutex_expire=5,
        )
        workers_dir = root / "workers"
        with celery_workers(["w1", "w2"], env, config, workers_dir, preload=("torch",)) as workers:
            # The reference runs while the workers import the code location.
            with dg.DagsterInstance.ephemeral() as scratch:
                settings = Settings(sas_url=server.url, release="DR17", data_dir=reference_dir)
                plates = run_in_process(settings, scratch)
            wait_until_ready(workers)

            with dg.DagsterInstance.get() as instance:
                celery_settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)
                catalog = build_definitions(celery_settings).resolve_job_def("catalog_job")
                assert catalog.execute_in_process(instance=instance).success
                assert catalog_plates(data_dir) == plates
                instance.add_dynamic_partitions("plates", plates)
                shutil.copytree(
                    reference_dir / "products" / "models",
                    data_dir / "products" / "models",
                    symlinks=True,
                )
                acquisition = subprocess.run(
                    execute_command("acquisition_job", plates), env=env, cwd=REPO,
                    capture_output=True, text=True, timeout=240, check=False,
                )  # fmt: skip
                assert acquisition.returncode == 0, acquisition.stderr[-4000:]
                runs = instance.get_runs(dg.RunsFilter(job_name="acquisition_job"), limit=1)
                run_ids = {"acquisition_job": runs[0].run_id}

                workers_before = {w.hostname(): w.pids for w in workers}
                killer = WorkerKiller(instance, "latents_job", workers)
                killer.start()
                # Workers rebuild the job from celery_job, as they would for the CLI's runs.
                job = dg.build_reconstructable_job(CODE_LOCATION, "celery_job", ("latents_job",))
                try:
                    with pytest.MonkeyPatch.context() as celery_env:
                        for name, value in env.items():
                            celery_env.setenv(name, value)
                        result = dg.execute_job(
                            job, instance, tags=plate_range_tags(plates[0], plates[-1])
                        )
                finally:
                    killer.stop.set()
                    killer.join(timeout=10)
                assert result.success
                assert killer.killed is not None, "no latents step started on a worker"
                run_ids["latents_job"] = result.run_id
                orchestrators = {}
                for name, run_id in run_ids.items():
                    start = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
                    orchestrators[name] = start[0].dagster_event.pid

    return CeleryRuns(
        plates=plates,
        reference=reference_dir / "products",
        products=data_dir / "products",
        run_ids=run_ids,
        orchestrators=orchestrators,
        workers=workers_before,
        killed=killer.killed.hostname(),
        killed_step=killer.step,
        instance_home=home,
    )


def step_starts(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, int]]:
    """(step key, pid) of every STEP_START of the run, in order."""
    return [
        (entry.dagster_event.step_key, entry.dagster_event.pid)
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    ]


def worker_hostnames(instance: dg.DagsterInstance, run_id: str) -> dict[str, set[str]]:
    """Per step, the Celery workers that reported taking it (dagster-celery's engine events)."""
    taken: dict[str, set[str]] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = entry.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            hostname = metadata["Celery worker"].value
            taken.setdefault(entry.dagster_event.step_key, set()).add(hostname)
    return taken


@pytest.fixture(scope="module")
def instance(celery_runs):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(celery_runs.instance_home))
        with dg.DagsterInstance.get() as instance:
            yield instance


def test_celery_steps_ran_in_the_worker_processes(celery_runs, instance):
    pids = {pid: hostname for hostname, group in celery_runs.workers.items() for pid in group}
    ran_on = set()
    for job, run_id in celery_runs.run_ids.items():
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS, job
        starts = step_starts(instance, run_id)
        steps = {step for step, _ in starts}
        assert steps, job
        for step, pid in starts:
            assert pid in pids, f"{job}: {step} ran in pid {pid}, not in a worker"
            assert pid not in (os.getpid(), celery_runs.orchestrators[job])
            ran_on.add(pids[pid])
        # dagster-celery's own record of which worker took each step says the same.
        taken = worker_hostnames(instance, run_id)
        assert set(taken) == steps, job
        assert set().union(*taken.values()) <= set(celery_runs.workers), job
    assert {step for step, _ in step_starts(instance, celery_runs.run_ids["acquisition_job"])} == {
        "maps_files", "line_cubes"
    }  # fmt: skip
    assert ran_on == set(celery_runs.workers), "both workers ran steps"


def test_a_step_of_a_killed_celery_worker_runs_again_on_the_other(celery_runs, instance):
    run_id = celery_runs.run_ids["latents_job"]
    killed_group = celery_runs.workers[celery_runs.killed]
    (survivor,) = set(celery_runs.workers) - {celery_runs.killed}
    starts = [pid for step, pid in step_starts(instance, run_id) if step == celery_runs.killed_step]
    assert len(starts) == 2, "the killed step started once on each worker"
    assert starts[0] in killed_group and starts[1] in celery_runs.workers[survivor]
    assert worker_hostnames(instance, run_id)[celery_runs.killed_step] == set(celery_runs.workers)
    successes = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    assert sorted(entry.dagster_event.step_key for entry in successes) == [
        f"{variant}__latents" for variant in VARIANTS
    ]
    # What the killed step left half-written is only temporaries, which the next
    # `manga-assets run` removes; every published latents file records the current model and
    # cubes (the provenance that decides what a later run embeds again).
    clean_temporaries(celery_runs.products)
    features = pd.concat(
        pd.read_parquet(celery_runs.products / "features" / f"{plate}.parquet")
        for plate in celery_runs.plates
    )
    cubes = plate_cube_digests(features)
    for variant in VARIANTS:
        model_id = json.loads(
            (celery_runs.products / "models" / variant / "metrics.json").read_text()
        )["model_id"]
        for plate in celery_runs.plates:
            path = celery_runs.products / variant / "latents" / f"{plate}.parquet"
            wanted = latents_file_provenance(LATENTS_CODE_VERSION, model_id, cubes[plate])
            assert read_provenance(path) == wanted, path


def product_files(products: Path) -> list[str]:
    return sorted(
        str(path.relative_to(products))
        for path in products.rglob("*")
        if path.is_file() and "models" not in path.relative_to(products).parts
    )


def test_celery_products_equal_the_in_process_ones(celery_runs):
    reference, products = celery_runs.reference, celery_runs.products
    clean_temporaries(products)
    files = product_files(products)
    # The reference also trained its models: its training set and checkpoints are extra.
    expected = [
        name for name in product_files(reference)
        if not name.startswith(("training_set", ".training_set", "checkpoints"))
    ]  # fmt: skip
    assert files == expected
    cubes = [name for name in files if name.endswith(".npz")]
    plates = celery_runs.plates
    features = [pd.read_parquet(reference / "features" / f"{p}.parquet") for p in plates]
    assert len(cubes) == sum(int((table["status"] == "ok").sum()) for table in features) > 0
    for name in cubes:
        assert (products / name).read_bytes() == (reference / name).read_bytes(), name
    for name in files:
        if not name.endswith(".parquet"):
            continue
        ours, theirs = pd.read_parquet(products / name), pd.read_parquet(reference / name)
        # When the server was asked is the only thing that differs between two runs.
        ours, theirs = (t.drop(columns=["checked_at"], errors="ignore") for t in (ours, theirs))
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=name)
        assert read_provenance(products / name) == read_provenance(reference / name), name
    latents = [name for name in files if "/latents/" in name]
    assert len(latents) == len(VARIANTS) * len(celery_runs.plates)


def test_deploy_celery_yaml_configures_workers_as_the_celery_code_location_runs():
    from manga_assets.defs.celery_location import CELERY_EXECUTOR_CONFIG

    config = yaml.safe_load(CELERY_WORKER_CONFIG.read_text())
    assert config["execution"]["config"] == CELERY_EXECUTOR_CONFIG
