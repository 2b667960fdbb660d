"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary file gets the permissions a plain ``open(path, "w")`` would give (0666 less the
    umask), not the owner-only 0600 of ``tempfile.mkstemp``, so products stay readable by the
    users who share them. On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def replace_directory(new: Path, destination: Path) -> None:
    """Move the finished directory ``new`` onto ``destination``, replacing what is there.

    The old directory is first renamed aside, so at every moment ``destination`` is either the
    complete old directory or the complete new one.
    """
    if destination.exists():
        old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(destination, old)
        os.replace(new, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, destination)
