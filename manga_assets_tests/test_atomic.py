"""Atomic writes and directory publication."""

import os
import stat
import threading

import pytest

from manga_assets.atomic import (
    atomic_path,
    clean_temporaries,
    publish_directory,
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


def test_a_published_directory_is_never_missing_and_old_versions_go(tmp_path):
    destination = tmp_path / "models" / "ae"
    for generation in range(3):
        new = temporary_directory(destination)
        (new / "weights").write_text(str(generation))
        publish_directory(new, destination)
        assert (destination / "weights").read_text() == str(generation)
    hidden = sorted(p.name for p in destination.parent.iterdir() if p.name.startswith("."))
    assert hidden == [destination.resolve().name]


def test_a_plain_directory_from_before_versions_is_migrated(tmp_path):
    destination = tmp_path / "training_set"
    destination.mkdir()
    (destination / "old").write_text("x")
    new = temporary_directory(destination)
    (new / "new").write_text("y")
    publish_directory(new, destination)
    assert destination.is_symlink() and os.listdir(destination) == ["new"]
    assert sorted(os.listdir(tmp_path)) == sorted(["training_set", destination.resolve().name])


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
