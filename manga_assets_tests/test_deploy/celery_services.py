"""A throwaway Redis server and ``dagster-celery`` workers on 127.0.0.1 for the Celery tests.

Redis is Debian's ``redis-server`` (``make test-services`` installs it). Each service runs in its
own session, so its process group holds it and every process it forks (a Celery worker is the
``dagster-celery`` command, the ``celery`` process it starts and the pool processes that run
steps); stopping kills the group, so nothing outlives the context.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CELERY_WORKER_CONFIG = REPO / "deploy" / "celery.yaml"
DAGSTER_CELERY = str(Path(sys.executable).with_name("dagster-celery"))
CODE_LOCATION = "manga_assets.defs.celery_location"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to the process group that ``process`` leads, then reap ``process``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def group_pids(pgid: int) -> set[int]:
    """The live processes of process group ``pgid`` (from /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(entry.name)) == pgid:
                pids.add(int(entry.name))
    return pids


@dataclass(frozen=True)
class LocalRedis:
    port: int

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        """The variables that the Celery code location and deploy/celery.yaml read."""
        return {
            "DAGSTER_CELERY_BROKER_URL": self.url(0),
            "DAGSTER_CELERY_BACKEND_URL": self.url(1),
        }


@contextlib.contextmanager
def local_redis(directory: Path) -> Iterator[LocalRedis]:
    """A Redis server on a free port of 127.0.0.1, in memory only, killed on exit."""
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("redis-server not found (apt-get install -y redis-server)")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(directory / 'redis.log')}")
            time.sleep(0.05)
        yield LocalRedis(port)
    finally:
        stop_group(process)
        log.close()


def worker_config(path: Path, **transport_options: int) -> Path:
    """deploy/celery.yaml with ``transport_options`` overriding its broker transport options."""
    config = yaml.safe_load(CELERY_WORKER_CONFIG.read_text())
    options = config["execution"]["config"]["config_source"]["broker_transport_options"]
    options.update(transport_options)
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class CeleryWorker:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pids(self) -> set[int]:
        return group_pids(self.process.pid)

    def hostname(self) -> str:
        return f"{self.name}@{socket.gethostname()}"

    def kill(self) -> None:
        stop_group(self.process)


@contextlib.contextmanager
def celery_workers(
    names: list[str],
    env: dict[str, str],
    config: Path,
    directory: Path,
    preload: tuple[str, ...] = (),
) -> Iterator[list[CeleryWorker]]:
    """``dagster-celery worker`` processes on the Celery code location, one step at a time each.

    They import the code location, and the modules in ``preload``, before forking their pool
    process (``-i``), so a step does not pay for it. Yields as soon as they are started
    (:func:`wait_until_ready` waits for them), so the caller can work while they import.
    """
    import dagster as dg

    directory.mkdir(parents=True, exist_ok=True)
    # Each worker opens the instance as it starts. Two processes creating a new SQLite instance
    # at once can both stamp its schema version, and every later open then fails ("more than
    # one head"): create it here first.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]):
        pass
    workers: list[CeleryWorker] = []
    try:
        for name in names:
            log = directory / f"{name}.log"
            includes = [arg for module in (CODE_LOCATION, *preload) for arg in ("-i", module)]
            command = [
                DAGSTER_CELERY, "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
                "-n", name, *includes, "--", "--concurrency=1", "--without-gossip",
                "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            with open(log, "w") as stream:
                process = subprocess.Popen(
                    command, env=env, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            workers.append(CeleryWorker(name, process, log))
        yield workers
    finally:
        for worker in workers:
            worker.kill()


def wait_until_ready(workers: list[CeleryWorker], timeout: float = 120) -> None:
    """Return once every worker has logged that it is ready to take tasks."""
    deadline = time.monotonic() + timeout
    waiting = list(workers)
    while waiting:
        for worker in list(waiting):
            if " ready." in worker.log.read_text():
                waiting.remove(worker)
            elif worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.log.read_text()}")
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout:.0f} s: {waiting}")
        time.sleep(0.1)
