"""Atomic writes: a reader sees the old product or the new one, never half of one.

Files are written to a unique temporary name beside their destination, then renamed onto it.
Directories (the training set, a model) are published as versions: the finished directory is
moved to ``.{name}.v-{id}`` and ``{name}`` is a symbolic link swapped onto the new version in one
rename, so ``{name}`` is never missing. Every temporary name starts with ``.{name}.`` and carries
one of the markers in ``_TEMPORARY_MARKERS``; a run killed mid-write leaves them behind and
:func:`clean_temporaries` removes them at the start of the next run (under the data-directory
lock, so no live writer owns them).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION_MARKER = ".v-"
# Markers of names that exist only while a write is in flight.
_TEMPORARY_MARKERS = (".tmp", ".link-", ".old-")
_VERSION = re.compile(r"^\.(?P<name>.+)\.v-[0-9a-f]{12}$")


def _unique(path: Path, marker: str) -> Path:
    return path.with_name(f".{path.name}{marker}{os.getpid()}-{uuid.uuid4().hex[:12]}")


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
    directory = _unique(destination, ".tmp-")
    directory.mkdir()
    return directory


def publish_directory(new: Path, destination: Path, *, durable: bool = False) -> Path:
    """Make the finished directory ``new`` what ``destination`` shows, with no gap.

    ``new`` is renamed to a version ``.{name}.v-{id}`` beside ``destination`` and
    ``destination`` becomes (or stays) a relative symbolic link to it, swapped in one rename;
    a reader opening ``destination/x`` gets the old version's file or the new one's. The
    versions no longer linked are then removed. ``new`` must be on the same filesystem
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
    if destination.is_dir() and not destination.is_symlink():
        legacy = f".{destination.name}{VERSION_MARKER}{uuid.uuid4().hex[:12]}"
        os.replace(destination, parent / legacy)
    link = _unique(destination, ".link-")
    os.symlink(version.name, link)
    os.replace(link, destination)
    _fsync_directory(parent)
    _remove_unlinked_versions(parent, destination.name)
    return version


# Existing callers (training set, model checkpoint) publish through the old name.
replace_directory = publish_directory


def resolve_published(path: Path | str) -> Path:
    """The version a published directory shows now: read several files of one version from it.

    A reader that opens ``models/ae/config.json`` and then ``models/ae/model.pt`` could see a
    publication happen between the two; resolving first pins one version.
    """
    return Path(path).resolve()


def _remove_unlinked_versions(parent: Path, name: str) -> None:
    current = os.readlink(parent / name) if (parent / name).is_symlink() else None
    for entry in parent.glob(f".{name}{VERSION_MARKER}*"):
        if entry.name != current:
            shutil.rmtree(entry, ignore_errors=True)


def clean_temporaries(root: Path | str) -> list[Path]:
    """Remove what interrupted writes left under ``root``; return what was removed.

    Only call it while no writer is running (``manga-assets run`` holds the data-directory
    lock): a live writer's temporary file looks the same as an orphan's.
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
            orphan_version = version is not None and not _links_to(
                here / version["name"], name
            )
            if orphan_version or any(marker in name for marker in _TEMPORARY_MARKERS):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
        # Do not descend into what was just removed.
        directories[:] = [d for d in directories if (here / d).exists()]
    return removed


def _links_to(link: Path, target_name: str) -> bool:
    return link.is_symlink() and os.readlink(link) == target_name
