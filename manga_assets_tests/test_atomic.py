"""Atomic writes and directory publication."""

import errno
import os
import stat
import subprocess
import sys
import threading

import pytest

from manga_assets.atomic import (
    _HOST,
    DiskFullError,
    atomic_path,
    clean_temporaries,
    publish_directory,
    reserve_space,
    resolve_published,
    temporary_directory,
    write_text,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "product.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["product.txt"]


def test_files_get_the_umask_permissions_and_the_umask_is_never_touched(tmp_path, monkeypatch):
    def forbidden(mask):
        raise AssertionError("os.umask is process-wide: threads writing at once would race")

    current = os.umask(0o022)
    try:
        monkeypatch.setattr(os, "umask", forbidden)
        threads = [
            threading.Thread(target=write_text, args=(tmp_path / f"{i}.txt", "x"))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        monkeypatch.undo()
        os.umask(current)
    modes = {stat.S_IMODE((tmp_path / f"{i}.txt").stat().st_mode) for i in range(8)}
    assert modes == {0o644}


def test_a_published_directory_is_never_missing_and_cleaning_keeps_two_versions(tmp_path):
    destination = tmp_path / "models" / "ae"
    versions = []
    for generation in range(3):
        new = temporary_directory(destination)
        (new / "weights").write_text(str(generation))
        versions.append(publish_directory(new, destination).name)
        assert (destination / "weights").read_text() == str(generation)
    assert os.readlink(destination.parent / ".ae.previous") == versions[1]

    removed = clean_temporaries(tmp_path)

    assert [path.name for path in removed] == [versions[0]]
    hidden = sorted(p.name for p in destination.parent.iterdir() if p.name.startswith("."))
    assert hidden == sorted([".ae.previous", *versions[1:]])


def test_a_plain_directory_from_before_versions_is_migrated(tmp_path):
    destination = tmp_path / "training_set"
    destination.mkdir()
    (destination / "old").write_text("x")
    new = temporary_directory(destination)
    (new / "new").write_text("y")
    publish_directory(new, destination)
    assert destination.is_symlink() and os.listdir(destination) == ["new"]
    assert os.listdir(tmp_path / ".training_set.previous") == ["old"]


def test_a_pinned_version_outlives_later_publications(tmp_path):
    destination = tmp_path / "models" / "ae"
    publish(destination, "first")
    pinned = resolve_published(destination)
    publish(destination, "second")
    publish(destination, "third")
    # A reader that resolved the link before both publications still reads its whole version.
    assert (pinned / "model.pt").read_text() == "first"


def test_interleaved_publishers_never_leave_a_dangling_link(tmp_path, monkeypatch):
    destination = tmp_path / "training_set"
    publish(destination, "old")
    real_symlink = os.symlink
    interleaved = []

    def symlink_after_another_publisher(target, link, *args, **kwargs):
        if not interleaved:  # the second publisher runs between the first one's two renames
            interleaved.append(True)
            publish(destination, "second")
        real_symlink(target, link, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", symlink_after_another_publisher)
    publish(destination, "first")
    monkeypatch.undo()
    assert interleaved and (destination / "model.pt").read_text() == "first"
    assert (tmp_path / ".training_set.previous" / "model.pt").exists()


def publish(destination, content: str):
    new = temporary_directory(destination)
    (new / "model.pt").write_text(content)
    return publish_directory(new, destination)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_writer_removes_what_dead_writers_of_its_product_left(tmp_path):
    product = tmp_path / "features" / "10001.parquet"
    product.parent.mkdir()
    host = _HOST
    dead = product.with_name(f".10001.parquet.tmp-{host}-{dead_pid()}-0123456789ab")
    live = product.with_name(f".10001.parquet.tmp-{host}-{os.getpid()}-0123456789ab")
    elsewhere = product.with_name(f".10001.parquet.tmp-ffffffff-{dead_pid()}-0123456789ab")
    other_product = product.with_name(f".10002.parquet.tmp-{host}-{dead_pid()}-0123456789ab")
    dead_dir = tmp_path / f".training_set.tmp-{host}-{dead_pid()}-0123456789ab"
    for path in (dead, live, elsewhere, other_product):
        path.write_bytes(b"half")
    dead_dir.mkdir()

    write_text(product, "table")  # a step writing its product, as any Dagster-launched one does
    temporary_directory(tmp_path / "training_set")

    assert not dead.exists() and not dead_dir.exists()
    assert live.exists(), "a live writer's temporary is kept"
    assert elsewhere.exists(), "another host's writer cannot be judged from here"
    assert other_product.exists(), "another product's temporaries are its own writer's business"


def test_a_full_disk_is_a_clear_error_when_space_is_reserved(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    path = tmp_path / "flux.npy"
    path.write_bytes(b"")
    with pytest.raises(DiskFullError, match=r"disk full: flux.npy needs 2.0 MiB"):
        reserve_space(path, 2 * 1024**2)


def test_cleaning_removes_what_killed_writers_left_and_keeps_products(tmp_path):
    destination = tmp_path / "models" / "vae"
    new = temporary_directory(destination)
    (new / "weights").write_text("1")
    publish_directory(new, destination)
    orphan_version = destination.parent / ".vae.v-0123456789ab"
    orphan_version.mkdir()
    half_dir = temporary_directory(tmp_path / "training_set")
    (half_dir / "flux.npy").write_bytes(b"x" * 10)
    cube = tmp_path / "cubes" / "10001" / "10001-1901.npz"
    cube.parent.mkdir(parents=True)
    cube.write_bytes(b"cube")
    half_file = cube.with_name(f".{cube.name}.tmp-123-abcdef012345")
    half_file.write_bytes(b"half")

    removed = clean_temporaries(tmp_path)

    assert set(removed) == {orphan_version, half_dir, half_file}
    assert cube.read_bytes() == b"cube" and (destination / "weights").read_text() == "1"


def fsynced_before_rename(monkeypatch, write) -> bool:
    """Whether ``write()`` fsyncs the file it then renames into place."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target, **kwargs):
        events.append(("replace", os.path.realpath(source)))
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write()
    monkeypatch.undo()
    renamed = [path for kind, path in events if kind == "replace"]
    return bool(renamed) and all(
        ("fsync", path) in events[: events.index(("replace", path))] for path in renamed
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds through /proc")
def test_cubes_and_parquet_tables_are_fsynced_before_their_rename(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from manga_assets.cubes.cube_file import Cube, write_cube
    from manga_assets.defs.io_managers import write_parquet

    cube = Cube(
        flux=np.zeros((1, 2, 2), np.float32),
        ivar=np.ones((1, 2, 2), np.float32),
        mask=np.zeros((1, 2, 2), bool),
        lines=("Ha-6564",),
    )
    frame = pd.DataFrame({"plateifu": ["10001-1901"], "status": ["ok"]})
    assert fsynced_before_rename(monkeypatch, lambda: write_cube(tmp_path / "c.npz", cube))
    assert fsynced_before_rename(
        monkeypatch, lambda: write_parquet(frame, tmp_path / "manifest.parquet")
    )
