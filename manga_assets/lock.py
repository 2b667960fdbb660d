"""One ``manga-assets run`` at a time per data directory.

Two runs writing the same manifests, cubes and models would interleave their writes, so a run
holds an exclusive ``flock`` on ``$MANGA_DATA_DIR/.manga-assets.lock`` for its whole length. The
kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a lock is
never left held by a dead process; the file's contents (pid, host, start time) only serve to name
the holder in messages, and to notice that the previous holder died without cleaning up.

Steps of the runs that Dagster itself launches (sensor, schedule, UI) hold the same lock
*shared* (``shared=True``): they run beside each other as Dagster plans them, but never while a
``manga-assets run`` holds it, and a ``manga-assets run`` never starts while one of them does.
A process that already holds the lock (``manga-assets run`` executing its steps in-process)
does not take it again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".manga-assets.lock"
# Data directories whose lock this process holds (resolved paths), so that nested requests
# (the steps of an in-process run) do not wait for the process itself.
_HELD_HERE: set[str] = set()


class DataDirLockedError(RuntimeError):
    """Another process is running on the same data directory."""


def _describe(holder: dict) -> str:
    if not holder:
        # Shared holders do not write the file: several may hold it at once.
        return "or steps of a run launched by Dagster: a sensor, the schedule or the UI"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


def _read_holder(handle) -> dict:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextmanager
def data_dir_lock(
    data_dir: Path,
    *,
    wait: bool = False,
    log: Callable[[str], None] = lambda message: None,
    shared: bool = False,
) -> Iterator[None]:
    """Hold the data directory's lock for the ``with`` block.

    Parameters
    ----------
    data_dir : Path
        ``$MANGA_DATA_DIR``; created if missing.
    wait : bool, optional
        Wait for a running holder to finish instead of refusing.
    log : callable, optional
        Told when the run waits, and when it takes over from a holder that was killed.
    shared : bool, optional
        Hold it shared, as a step of a run launched by Dagster does: other shared holders may
        hold it too, an exclusive holder (``manga-assets run``) may not.

    Raises
    ------
    DataDirLockedError
        When another process holds the lock and ``wait`` is False; the message names it.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD_HERE:
        yield
        return
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(handle))
            if not wait:
                raise DataDirLockedError(
                    f"another manga-assets run ({holder}) is writing to {data_dir}; wait for it "
                    f"to finish, or pass --wait to queue behind it (the lock is {path})"
                ) from None
            log(f"waiting for the run holding {path} ({holder}) to finish")
            fcntl.flock(handle, mode)
        if shared:
            _HELD_HERE.add(key)
            try:
                yield
            finally:
                _HELD_HERE.discard(key)
                fcntl.flock(handle, fcntl.LOCK_UN)
            return
        previous = _read_holder(handle)
        if previous:
            # The lock was free but still names a holder: that run died without releasing it.
            log(f"taking over the lock of a run that was interrupted ({_describe(previous)})")
        handle.seek(0)
        handle.truncate()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        handle.write(json.dumps(me))
        handle.flush()
        _HELD_HERE.add(key)
        try:
            yield
        finally:
            _HELD_HERE.discard(key)
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
