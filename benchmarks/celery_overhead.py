"""Steps on two Celery workers against the same steps in process, on the same plates.

    python benchmarks/celery_overhead.py [--plates 4] [--galaxies 8]

Writes a lean synthetic release, serves it on 127.0.0.1, starts a Redis server on a free port and
two ``dagster-celery`` workers (one step at a time each) on ``manga_assets.defs.celery_location``,
then in one process, on one SQLite instance and in two data directories holding the same seeded
models (inference is timed, not training):

- in process: ``acquisition_job`` then ``latents_job`` with ``execute_in_process``;
- Celery: the same two jobs over the same plate range with ``dg.execute_job`` on the Celery code
  location; each step is a task taken by a worker.

The latents job runs twice in each mode: once on fresh workers (whose pool process imports torch
at its first latents step), once more in the steady state of long-lived workers.

For each run it prints the wall time, the time in which at least one step was running (from the
STEP_START and STEP_SUCCESS events) and the difference, Dagster's overhead: planning, handing
steps over, IO-manager loads, and for Celery the broker round trips and the per-task rebuild of
the job and the instance in the worker. Workers and Redis are killed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manga_assets.defs.definitions import build_definitions  # noqa: E402
from manga_assets.defs.sensors import plate_range_tags  # noqa: E402
from manga_assets.mirror.server import MirrorServer  # noqa: E402
from manga_assets.settings import Settings  # noqa: E402
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release  # noqa: E402
from manga_assets_tests.test_deploy.celery_services import (  # noqa: E402
    CODE_LOCATION,
    REPO,
    celery_workers,
    local_redis,
    wait_until_ready,
    worker_config,
)
from manga_assets_tests.test_deploy.test_celery_workers import (  # noqa: E402
    catalog_plates,
    publish_seeded_models,
)

# The latents job twice: the first run on a worker pays for importing torch in its pool process
# (once per long-lived worker), the second shows the steady state.
JOBS = ("acquisition_job", "latents_job", "latents_job")


def step_time(instance: dg.DagsterInstance, run_id: str) -> tuple[float, int]:
    """Seconds in which at least one step of the run was running, and the number of steps."""
    starts, intervals = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            intervals.append((starts[event.step_key], entry.timestamp))
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        start = max(start, end)
        if stop > start:
            busy += stop - start
        end = max(end, stop)
    return busy, len(intervals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plates", type=int, default=4)
    parser.add_argument("--galaxies", type=int, default=8, help="galaxies per plate")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        spec = SyntheticReleaseSpec(
            n_plates=args.plates, galaxies_per_plate=args.galaxies, seed=3, lean=True
        )
        release = build_release(root / "release", spec)
        home = root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        data = {"in process": root / "in_process", "Celery, 2 workers": root / "celery"}
        with MirrorServer(release.root) as server, local_redis(root / "redis") as redis:
            env = {
                **redis.env(),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "DAGSTER_HOME": str(home),
                "MANGA_DATA_DIR": str(data["Celery, 2 workers"]),
                "MANGA_SAS_URL": server.url,
                "MANGA_RELEASE": "DR17",
                "MANGA_TORCH_THREADS": "1",
            }
            os.environ.update(env)
            config = worker_config(root / "celery.yaml")
            started = time.perf_counter()
            with celery_workers(["w1", "w2"], {**os.environ}, config, root / "workers") as workers:
                wait_until_ready(workers)
                ready = time.perf_counter() - started
                rows = []
                with dg.DagsterInstance.get() as instance:
                    for mode, data_dir in data.items():
                        settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)
                        defs = build_definitions(settings)
                        catalog = defs.resolve_job_def("catalog_job")
                        assert catalog.execute_in_process(instance=instance).success
                        plates = catalog_plates(data_dir)
                        instance.add_dynamic_partitions("plates", plates)
                        publish_seeded_models(data_dir)
                        tags = plate_range_tags(plates[0], plates[-1])
                        for index, job_name in enumerate(JOBS):
                            label = job_name + (", again" if job_name in JOBS[:index] else "")
                            start = time.perf_counter()
                            if mode == "in process":
                                result = defs.resolve_job_def(job_name).execute_in_process(
                                    instance=instance, tags=tags
                                )
                            else:
                                job = dg.build_reconstructable_job(
                                    CODE_LOCATION, "celery_job", (job_name,)
                                )
                                result = dg.execute_job(job, instance, tags=tags)
                            wall = time.perf_counter() - start
                            assert result.success, (mode, job_name)
                            busy, steps = step_time(instance, result.run_id)
                            rows.append((mode, label, steps, wall, busy, wall - busy))
        galaxies = len(pd.read_parquet(data["in process"] / "products" / "catalog.parquet"))
        latents = {
            mode: pd.concat(
                pd.read_parquet(path)
                for path in sorted((directory / "products" / "ae" / "latents").glob("*.parquet"))
            )
            for mode, directory in data.items()
        }
        same = latents["in process"].equals(latents["Celery, 2 workers"])

    print(f"{args.plates} plates, {galaxies} galaxies; workers ready in {ready:.1f} s; "
          f"Celery latents equal to in-process: {same}; load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print()
    print("| executor | job | steps | wall (s) | steps running (s) | Dagster overhead (s) |")
    print("|---|---|---:|---:|---:|---:|")
    totals: dict[str, list[float]] = {}
    for mode, job_name, steps, wall, busy, overhead in rows:
        print(f"| {mode} | {job_name} | {steps} | {wall:.1f} | {busy:.1f} | {overhead:.1f} |")
        total = totals.setdefault(mode, [0, 0.0, 0.0, 0.0])
        for index, value in enumerate((steps, wall, busy, overhead)):
            total[index] += value
    for mode, (steps, wall, busy, overhead) in totals.items():
        print(f"| **{mode}** | all | {steps:.0f} | **{wall:.1f}** | {busy:.1f} | "
              f"**{overhead:.1f}** |")  # fmt: skip
    base, celery = totals["in process"], totals["Celery, 2 workers"]
    print()
    per_step = [total[3] / total[0] for total in (base, celery)]
    print(f"Celery / in process, wall: {celery[1] / base[1]:.2f}; Dagster overhead per step: "
          f"{per_step[0]:.2f} s in process, {per_step[1]:.2f} s on Celery")  # fmt: skip


if __name__ == "__main__":
    main()
