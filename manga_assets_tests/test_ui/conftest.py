"""A real ``dagster-webserver`` on 127.0.0.1 over an instance that ran the acquisition slice.

One synthetic DR17 release is served as a SAS, ``run_pipeline(..., acquisition_only=True)``
records its runs in a SQLite instance under a temporary ``DAGSTER_HOME``, and the webserver is
started as a subprocess on that same home with ``workspace.yaml``. The tests of this package
share it (package scope): one start, a few seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance

from manga_assets.defs.runner import RunSummary, run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.settings import Settings
from manga_assets_tests.conftest import build_small_release

REPO = Path(__file__).resolve().parents[2]
LOCATION = "manga_assets"
LOAD_TIMEOUT_S = 90.0

LOCATIONS_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


@dataclass(frozen=True)
class Webserver:
    """The running webserver and what was materialised before it started."""

    url: str
    home: Path
    data_dir: Path
    summary: RunSummary
    log: Path

    def graphql(self, query: str, **variables) -> dict:
        """The ``data`` of a GraphQL query; fails the test on GraphQL errors."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_until_loaded(process: subprocess.Popen, url: str, log: Path) -> float:
    """Seconds until the code location is LOADED; fails on a load error, exit or timeout."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < LOAD_TIMEOUT_S:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log_tail(log)}")
        try:
            requests.get(f"{url}/server_info", timeout=2).raise_for_status()
            body = requests.post(
                f"{url}/graphql", json={"query": LOCATIONS_QUERY}, timeout=5
            ).json()
        except (requests.RequestException, ValueError):
            time.sleep(0.5)
            continue
        entries = (body.get("data") or {}).get("workspaceOrError", {}).get("locationEntries", [])
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            if loaded["__typename"] != "RepositoryLocation":
                pytest.fail(f"{LOCATION} failed to load: {loaded.get('message')}")
            return elapsed
        time.sleep(0.5)
    pytest.fail(f"{LOCATION} not loaded after {LOAD_TIMEOUT_S:.0f} s:\n{log_tail(log)}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the webserver's process group (it and its code server), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="package")
def webserver(tmp_path_factory) -> Webserver:
    root = tmp_path_factory.mktemp("ui")
    release = build_small_release(root / "release", n_plates=2, galaxies_per_plate=4)
    home, data_dir, log = root / "dagster_home", root / "data", root / "webserver.log"
    home.mkdir()
    # The run below and the webserver read this same file, hence the same SQLite storage.
    (home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {home}\n"
        "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
    )
    with MirrorServer(release.root) as mirror:
        settings = Settings(sas_url=mirror.url, release="DR17", data_dir=data_dir)
        with DagsterInstance.from_config(str(home)) as instance:
            summary = run_pipeline(
                settings, instance=instance, acquisition_only=True, log=lambda message: None
            )

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "MANGA_DATA_DIR": str(data_dir),
            "MANGA_SAS_URL": mirror.url,
            "MANGA_RELEASE": "DR17",
        }
        command = [
            str(Path(sys.executable).with_name("dagster-webserver")),
            *("-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_loaded(process, url, log)
            yield Webserver(url=url, home=home, data_dir=data_dir, summary=summary, log=log)
        finally:
            stop(process)
