"""Atomic writes: a reader sees the old product or the new one, never half of one.

Files are written to a unique temporary name beside their destination, then renamed onto it.
Directories (the training set, a model) are published as versions: the finished directory is
moved to ``.{name}.v-{id}`` and ``{name}`` is a symbolic link swapped onto the new version in one
rename, so ``{name}`` is never missing.

A reader resolves the link once (:func:`resolve_published`) and reads every file from that
version, so a publication never deletes a version: a reader in another process may hold any of
them. ``.{name}.previous`` links the version before the current one, and only
:func:`clean_temporaries`, which runs under the data directory's *exclusive* lock (no step of any
run is live), prunes the versions that are neither current nor previous.

Every temporary name starts with ``.{name}.``, carries one of the markers in
``_TEMPORARY_MARKERS``, and names its writer (a hash of the host, and the pid). A run killed
mid-write leaves them behind: the next writer of the same product removes those whose writer is
gone (:func:`clean_orphans_of`, called by :func:`atomic_path` and :func:`temporary_directory`),
so every step cleans up after itself, whoever launched it; :func:`clean_temporaries` removes the
rest.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION_MARKER = ".v-"
# Markers of names that exist only while a write is in flight.
_TEMPORARY_MARKERS = (".tmp", ".link-", ".old-")
_VERSION = re.compile(r"^\.(?P<name>.+)\.v-[0-9a-f]{12}$")
PREVIOUS_SUFFIX = ".previous"
# The writer part of a temporary name: host hash, pid, then a random part.
_WRITER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{12}$")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left for a product; the message says how much was needed and where."""


def _unique(path: Path, marker: str) -> Path:
    writer = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return path.with_name(f".{path.name}{marker}{writer}")


def _writer_gone(name: str) -> bool:
    """Whether the process that made temporary ``name`` has ended (on this host).

    A writer on another host, or a name without a writer, cannot be judged from here: it is
    left for :func:`clean_temporaries`.
    """
    writer = _WRITER.search(name)
    if writer is None or writer["host"] != _HOST:
        return False
    try:
        os.kill(int(writer["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's
        return False
    return False


def clean_orphans_of(destination: Path | str) -> list[Path]:
    """Remove the temporaries beside ``destination`` that a writer now gone left; return them.

    Safe while other writers run (a live writer's temporaries are kept), so every writer calls
    it before making its own.
    """
    destination = Path(destination)
    prefix = f".{destination.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(destination.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not any(m in name for m in _TEMPORARY_MARKERS):
            continue
        if _writer_gone(name):
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def reserve_space(path: Path | str, size: int) -> None:
    """Allocate ``size`` bytes of disk for the file at ``path`` now, rather than on first write.

    A memory-mapped array writes its pages long after it was created; on a full disk such a
    write is a SIGBUS that kills the process with no message. Reserving the blocks up front turns
    that into a :class:`DiskFullError` while cleanup is still possible. Filesystems that cannot
    preallocate are left as they are.

    Raises
    ------
    DiskFullError
        If the disk (or the user's quota) has not ``size`` bytes free.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    handle = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(handle, 0, size)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(
                exc.errno,
                f"disk full: {Path(path).name} needs {size / 1024**2:.1f} MiB in "
                f"{Path(path).parent}; free space there (or point MANGA_DATA_DIR at a larger "
                "disk) and run again",
            ) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(handle)


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (POSIX needs the directory itself synced)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is still atomic
    finally:
        os.close(handle)


@contextmanager
def atomic_path(
    path: Path | str, *, durable: bool = False, keep_unchanged: bool = False
) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary file is created with mode 0666 filtered by the process umask, as a plain
    ``open(path, "w")`` would be, so products stay readable by the users who share them. (The
    umask is never changed or read: changing it is process-wide and races with other threads.)

    Parameters
    ----------
    path : Path or str
        Destination; its parent folder is created if needed.
    durable : bool, optional
        fsync the file and its folder, so the new content survives a power cut, not just a
        killed process. Use it for what is expensive to remake (models, checkpoints, sidecars).
    keep_unchanged : bool, optional
        Leave ``path`` untouched (mtime included) when it already holds the same bytes.

    On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans_of(path)
    temporary = _unique(path, ".tmp-")
    # O_EXCL: the name is ours alone; the mode argument is filtered by the umask by the kernel.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        if keep_unchanged and _same_bytes(temporary, path):
            temporary.unlink()
            return
        if durable:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
        if durable:
            _fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return b.is_file() and filecmp.cmp(a, b, shallow=False)


def write_bytes(path: Path | str, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, durable=durable) as temporary:
        temporary.write_bytes(data)


def write_text(path: Path | str, text: str, *, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, durable=durable) as temporary:
        temporary.write_text(text, encoding="utf-8")


def temporary_directory(destination: Path) -> Path:
    """A new empty directory beside ``destination`` to build its next version in."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    clean_orphans_of(destination)
    directory = _unique(destination, ".tmp-")
    directory.mkdir()
    return directory


def publish_directory(new: Path, destination: Path, *, durable: bool = False) -> Path:
    """Make the finished directory ``new`` what ``destination`` shows, with no gap.

    ``new`` is renamed to a version ``.{name}.v-{id}`` beside ``destination`` and
    ``destination`` becomes (or stays) a relative symbolic link to it, swapped in one rename;
    a reader opening ``destination/x`` gets the old version's file or the new one's. No version
    is removed here (a reader may hold any of them); the one that was current is linked as
    ``.{name}.previous``, and :func:`clean_temporaries` prunes the older ones under the
    exclusive lock. ``new`` must be on the same filesystem
    (build it with :func:`temporary_directory`). ``durable`` fsyncs every file of ``new``
    first, for what is expensive to remake (a trained model). Returns the new version's path.

    A ``destination`` that is still a plain directory (written before versions existed) is
    renamed to a version first; only that one-time migration has a moment without it.
    """
    destination = Path(destination)
    parent = destination.parent
    if durable:
        for file in (f for f in Path(new).rglob("*") if f.is_file()):
            with open(file, "rb") as stream:
                os.fsync(stream.fileno())
    version = parent / f".{destination.name}{VERSION_MARKER}{uuid.uuid4().hex[:12]}"
    os.replace(new, version)
    previous = os.readlink(destination) if destination.is_symlink() else None
    if destination.is_dir() and not destination.is_symlink():
        previous = f".{destination.name}{VERSION_MARKER}{uuid.uuid4().hex[:12]}"
        os.replace(destination, parent / previous)
    _point(destination, version.name)
    if previous is not None:
        _point(parent / f".{destination.name}{PREVIOUS_SUFFIX}", previous)
    _fsync_directory(parent)
    return version


def _point(link: Path, target_name: str) -> None:
    """Make ``link`` a symbolic link to ``target_name`` in one rename (never missing)."""
    temporary = _unique(link, ".link-")
    os.symlink(target_name, temporary)
    os.replace(temporary, link)


# Existing callers (training set, model checkpoint) publish through the old name.
replace_directory = publish_directory


def resolve_published(path: Path | str) -> Path:
    """The version a published directory shows now: read several files of one version from it.

    A reader that opens ``models/ae/config.json`` and then ``models/ae/model.pt`` could see a
    publication happen between the two; resolving first pins one version.
    """
    return Path(path).resolve()


def clean_temporaries(root: Path | str) -> list[Path]:
    """Remove what interrupted writes left under ``root``, and superseded versions.

    Returns what was removed. Only call it while no writer or pipeline reader is running
    (``manga-assets run`` holds the data directory's lock exclusively): a live writer's temporary
    file looks the same as an orphan's. The current and the previous version of each published
    directory are kept, for readers outside the pipeline that resolved the link a moment ago.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder, directories, files in os.walk(root):
        here = Path(folder)
        for name in [*directories, *files]:
            if not name.startswith("."):
                continue
            entry = here / name
            version = _VERSION.match(name)
            superseded = version is not None and not any(
                _links_to(here / link, name)
                for link in (version["name"], f".{version['name']}{PREVIOUS_SUFFIX}")
            )
            if superseded or any(marker in name for marker in _TEMPORARY_MARKERS):
                _remove(entry)
                removed.append(entry)
        # Do not descend into what was just removed.
        directories[:] = [d for d in directories if (here / d).exists()]
    return removed


def _links_to(link: Path, target_name: str) -> bool:
    return link.is_symlink() and os.readlink(link) == target_name
