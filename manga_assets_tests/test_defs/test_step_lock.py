"""Runs that Dagster launches (sensor, schedule, UI) respect the data directory's lock.

Their steps hold it shared through the resources they write with (``DataDirResource`` and the
IO managers, :mod:`manga_assets.defs.step_lock`): they wait while a ``manga-assets run`` (another
process, holding it exclusively) writes, and that command refuses to start while one of them
runs.
"""

import subprocess
import sys
import threading

import dagster as dg

from manga_assets.defs import step_lock
from manga_assets.defs.resources import DataDirResource

HOLD = (
    "import sys; from pathlib import Path; from manga_assets.lock import data_dir_lock\n"
    "with data_dir_lock(Path(sys.argv[1])):\n"
    "    print('held', flush=True); sys.stdin.readline()\n"
)
TRY = (
    "import sys; from pathlib import Path; from manga_assets.lock import data_dir_lock\n"
    "try:\n"
    "    with data_dir_lock(Path(sys.argv[1])): print('got it')\n"
    "except Exception as error: print(error)\n"
)


def test_a_step_waits_for_a_manga_assets_run_and_the_command_refuses_while_it_runs(
    tmp_path, monkeypatch
):
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    messages, seen = [], {}
    real_lock = step_lock.data_dir_lock

    def lock_that_releases_the_holder_when_waiting(*args, log, **kwargs):
        def on_message(message: str) -> None:
            messages.append(message)
            holder.communicate("done\n", timeout=30)  # the command finishes while the step waits

        return real_lock(*args, log=on_message, **kwargs)

    monkeypatch.setattr(step_lock, "data_dir_lock", lock_that_releases_the_holder_when_waiting)

    @dg.asset
    def written(data_dir: DataDirResource) -> None:
        seen["holder_exit"] = holder.poll()
        seen["command"] = subprocess.run(
            [sys.executable, "-c", TRY, data_dir.data_dir], capture_output=True, text=True
        ).stdout

    try:
        result = dg.materialize(
            [written],
            resources={"data_dir": DataDirResource(data_dir=str(data_dir))},
            instance=dg.DagsterInstance.ephemeral(),
        )
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    assert result.success
    assert len(messages) == 1 and messages[0].startswith("waiting for the run holding")
    assert seen["holder_exit"] == 0, "the step ran while the command held the lock"
    assert "steps of a run launched by Dagster" in seen["command"]
    assert "--wait" in seen["command"]


def test_a_sensor_evaluation_does_not_take_the_lock(tmp_path):
    """The new-plates sensor only reads the catalogue: it never waits for a running command."""
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    # Were the evaluation to wait for the holder, this ends the wait (and the test fails).
    watchdog = threading.Timer(60, holder.kill)
    watchdog.start()
    try:
        assert holder.stdout.readline().strip() == "held"
        from manga_assets.defs.sensors import new_plates_sensor

        with dg.build_sensor_context(
            resources={"data_dir": DataDirResource(data_dir=str(data_dir))},
            instance=dg.DagsterInstance.ephemeral(),
        ) as context:
            result = new_plates_sensor(context)
        assert holder.poll() is None, "the sensor waited for the command to finish"
    finally:
        watchdog.cancel()
        holder.kill()
        holder.communicate()
    assert isinstance(result, dg.SkipReason)
    assert "no catalogue yet" in result.skip_message
