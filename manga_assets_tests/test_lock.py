"""One run at a time per data directory: a second one is refused, a killed holder is taken over."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from manga_assets.lock import DataDirLockedError, data_dir_lock

HOLD = (
    "import sys, time; from pathlib import Path; from manga_assets.lock import data_dir_lock\n"
    "with data_dir_lock(Path(sys.argv[1])):\n"
    "    print('held', flush=True); time.sleep(120)\n"
)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / 'data'``; killed by the test."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "data")], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_second_run_on_the_same_data_directory_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(DataDirLockedError, match=rf"another manga-assets run \(pid {holder.pid} "):
        with data_dir_lock(tmp_path / "data"):
            pass


def test_the_command_refuses_with_a_clear_message(tmp_path, holder):
    done = subprocess.run(
        [str(Path(sys.executable).with_name("manga-assets")), "run", "--data-dir",
         str(tmp_path / "data"), "--sas-url", "http://127.0.0.1:9/sas"],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"another manga-assets run (pid {holder.pid}" in done.stderr
    assert "--wait" in done.stderr


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    messages = []
    with data_dir_lock(tmp_path / "data", log=messages.append):
        pass
    assert len(messages) == 1 and f"interrupted (pid {holder.pid} " in messages[0]
    # Released cleanly this time: the next run takes it without a word.
    with data_dir_lock(tmp_path / "data", log=messages.append):
        pass
    assert len(messages) == 1


def test_wait_queues_behind_the_holder(tmp_path, holder):
    messages = []

    def log(message: str) -> None:
        messages.append(message)
        holder.kill()  # the holder finishes while we wait

    with data_dir_lock(tmp_path / "data", wait=True, log=log):
        pass
    assert messages[0].startswith("waiting for the run holding")
