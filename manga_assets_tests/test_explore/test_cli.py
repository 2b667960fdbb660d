"""``manga-assets explore`` as a person starts it: a process, killed hard, started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from manga_assets_tests.test_ui.conftest import free_port, log_tail

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0


def start(data_dir: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "manga_assets.cli", "explore", "--data-dir", str(data_dir),
        "--port", str(port), *extra,
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"explore exited {process.returncode}:\n{log_tail(log)}"
        try:
            if requests.get(f"{url}/api/info", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"explore did not answer in {START_TIMEOUT_S:.0f} s:\n{log_tail(log)}")


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_a_posted_label_survives_a_sigkill_of_the_server(data_dir, tmp_path):
    port, log = free_port(), tmp_path / "explore.log"
    url = f"http://127.0.0.1:{port}"
    first = start(data_dir, port, log, "--reviewer", "ann")
    try:
        wait_ready(first, url, log)
        plateifu = requests.get(f"{url}/api/queue", params={"n": 1}, timeout=30).json()[0]
        response = requests.post(
            f"{url}/api/labels",
            json={"plateifu": plateifu["plateifu"], "label": "interesting", "note": "kept"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        stored = response.json()
    finally:
        kill(first)
    assert first.returncode == -signal.SIGKILL

    second = start(data_dir, port, log, "--reviewer", "ann")
    try:
        wait_ready(second, url, log)
        labels = requests.get(f"{url}/api/labels", timeout=30).json()
        assert stored in labels
        queue = requests.get(f"{url}/api/queue", params={"n": 1000}, timeout=30).json()
        assert stored["plateifu"] not in {row["plateifu"] for row in queue}
    finally:
        kill(second)
    # The default address is this machine only.
    assert f"at http://127.0.0.1:{port}/" in log.read_text()


def test_a_data_directory_without_products_is_refused_with_what_to_run(tmp_path):
    log = tmp_path / "explore.log"
    process = start(tmp_path / "empty", free_port(), log)
    assert process.wait(timeout=120) == 1
    text = log.read_text()
    assert "has no model's products" in text and "manga-assets run" in text
