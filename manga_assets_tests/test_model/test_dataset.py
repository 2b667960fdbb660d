from __future__ import annotations

import json

import numpy as np
import pytest

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.dataset import (
    CubeFormatError,
    GalaxyMapsDataset,
    TrainingSetError,
    build_training_set,
    make_loader,
    open_training_set,
    read_cube,
    split_of,
)
from manga_assets.model.normalise import Normalisation, galaxy_scale, normalise, valid_pixels
from manga_assets_tests.test_model.cubes import make_cube, write_cube, write_cubes

GRID = 16


def test_memmaps_hold_the_normalised_cubes(tmp_path):
    cubes = write_cubes(tmp_path, 12, grid=GRID, seed=3)
    summary = build_training_set(cubes, tmp_path / "ts", grid=GRID, seed=0)
    assert (summary.n_galaxies, summary.n_train + summary.n_val) == (12, 12)

    training_set = open_training_set(tmp_path / "ts")
    assert isinstance(training_set.flux, np.memmap) and isinstance(training_set.valid, np.memmap)
    assert training_set.flux.dtype == np.float32 and training_set.valid.dtype == np.bool_
    assert training_set.flux.shape == (12, 19, GRID, GRID)
    assert list(training_set.index.columns) == [
        "plateifu", "row", "split", "n_valid_pixels", "scale"
    ]  # fmt: skip
    normalisation = Normalisation()
    for record in training_set.index.itertuples():
        path = dict(cubes)[record.plateifu]
        flux, ivar, mask = read_cube(path, record.plateifu, grid=GRID)
        valid = valid_pixels(flux, mask, ivar)
        scale = galaxy_scale(flux, valid, PROJECT_LINES, normalisation)
        assert record.scale == pytest.approx(scale)
        assert record.n_valid_pixels == valid.sum()
        np.testing.assert_array_equal(training_set.valid[record.row], valid)
        np.testing.assert_array_equal(
            training_set.flux[record.row], normalise(flux, valid, scale, normalisation)
        )
    meta = json.loads((tmp_path / "ts" / "meta.json").read_text())
    assert meta["line_names"] == list(PROJECT_LINES) and meta["grid"] == GRID
    assert meta["fingerprint"] == summary.fingerprint
    # No temporary leftovers: only the published version that ts links to.
    hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == [(tmp_path / "ts").resolve()]


def test_all_invalid_cubes_are_excluded_and_counted(tmp_path):
    cubes = write_cubes(tmp_path, 5, grid=GRID, seed=4)
    flux, ivar, mask = make_cube(np.random.default_rng(0), GRID)
    empty = write_cube(tmp_path, "9999-1901", flux * 0, ivar, np.ones_like(mask))
    no_ivar = write_cube(tmp_path, "9999-1902", flux, np.zeros_like(ivar), mask)
    cubes = cubes[:2] + [("9999-1901", empty)] + cubes[2:] + [("9999-1902", no_ivar)]

    summary = build_training_set(cubes, tmp_path / "ts", grid=GRID)
    assert summary.n_galaxies == 5
    assert [(c.plateifu, c.reason) for c in summary.excluded] == [
        ("9999-1901", "every pixel is invalid"),
        ("9999-1902", "every pixel is invalid"),
    ]
    training_set = open_training_set(tmp_path / "ts")
    assert training_set.flux.shape[0] == 5  # the arrays were trimmed to the kept cubes
    assert "9999-1901" not in set(training_set.index["plateifu"])
    assert sorted(training_set.index["row"]) == list(range(5))
    assert summary.to_metadata()["n_excluded"] == 2


def test_wrong_grid_or_lines_are_refused_naming_galaxy_and_file(tmp_path):
    cubes = write_cubes(tmp_path, 3, grid=GRID, seed=5)
    flux, ivar, mask = make_cube(np.random.default_rng(0), 24)
    big = write_cube(tmp_path, "9999-3701", flux, ivar, mask)
    with pytest.raises(CubeFormatError, match=r"cube 9999-3701 \(.*9999-3701\.npz\) has flux of"):
        build_training_set(cubes + [("9999-3701", big)], tmp_path / "ts", grid=GRID)
    assert not (tmp_path / "ts").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    flux, ivar, mask = make_cube(np.random.default_rng(0), GRID)
    swapped = PROJECT_LINES[1:] + PROJECT_LINES[:1]
    odd = write_cube(tmp_path, "9999-3702", flux, ivar, mask, lines=swapped)
    with pytest.raises(CubeFormatError, match=r"cube 9999-3702 \(.*\) holds the lines"):
        build_training_set([("9999-3702", odd)], tmp_path / "ts", grid=GRID)


def test_failed_rebuild_keeps_the_previous_training_set(tmp_path):
    cubes = write_cubes(tmp_path, 4, grid=GRID, seed=6)
    first = build_training_set(cubes, tmp_path / "ts", grid=GRID)
    with pytest.raises(TrainingSetError, match="appears twice"):
        build_training_set(cubes + cubes[:1], tmp_path / "ts", grid=GRID)
    assert open_training_set(tmp_path / "ts").fingerprint == first.fingerprint


def test_split_is_stable_when_galaxies_are_added(tmp_path):
    cubes = write_cubes(tmp_path, 40, grid=GRID, seed=7)
    more = write_cubes(tmp_path, 30, grid=GRID, seed=8, first_ifu=40)
    build_training_set(cubes, tmp_path / "a", grid=GRID, seed=3, val_fraction=0.3)
    build_training_set(more + cubes, tmp_path / "b", grid=GRID, seed=3, val_fraction=0.3)
    before = open_training_set(tmp_path / "a").index.set_index("plateifu")["split"]
    after = open_training_set(tmp_path / "b").index.set_index("plateifu")["split"]
    assert after.loc[before.index].tolist() == before.tolist()
    assert 0 < (after == "val").sum() < len(after)
    assert all(split_of(p, 3, 0.3) == s for p, s in after.items())
    # Another seed gives another split.
    build_training_set(cubes, tmp_path / "c", grid=GRID, seed=4, val_fraction=0.3)
    other = open_training_set(tmp_path / "c").index.set_index("plateifu")["split"]
    assert other.tolist() != before.tolist()


def test_tiny_sets_get_both_splits(tmp_path):
    cubes = write_cubes(tmp_path, 2, grid=GRID, seed=9)
    summary = build_training_set(cubes, tmp_path / "ts", grid=GRID, val_fraction=0.15)
    assert (summary.n_train, summary.n_val) == (1, 1)


def test_loader_yields_aligned_batches_covering_the_split(easy_training_set):
    training_set = open_training_set(easy_training_set)
    dataset = GalaxyMapsDataset(training_set, "train")
    seen = []
    for batch in make_loader(dataset, 10, shuffle=True, seed=1):
        assert batch.x.shape == (len(batch.rows), 19, GRID, GRID) and len(batch.rows) <= 10
        np.testing.assert_array_equal(batch.x.numpy(), training_set.flux[batch.rows])
        np.testing.assert_array_equal(batch.valid.numpy(), training_set.valid[batch.rows])
        np.testing.assert_array_equal(batch.weight.numpy(), training_set.weight[batch.rows])
        seen.extend(batch.rows.tolist())
    assert sorted(seen) == training_set.rows("train").tolist()
    x, valid, weight, row = dataset[0]
    assert row == training_set.rows("train")[0]
    assert x.shape == valid.shape == weight.shape == (19, GRID, GRID)


def test_weights_are_the_inverse_variance_of_the_scaled_flux(tmp_path):
    cubes = write_cubes(tmp_path, 3, grid=GRID, seed=5)
    build_training_set(cubes, tmp_path / "ts", grid=GRID)
    training_set = open_training_set(tmp_path / "ts")
    for plateifu, path in cubes:
        row = training_set.index.set_index("plateifu").loc[plateifu]
        _, ivar, _ = read_cube(path, plateifu, grid=GRID)
        valid = np.asarray(training_set.valid[row["row"]])
        expected = np.where(valid, ivar * row["scale"] ** 2, 0.0)
        np.testing.assert_allclose(training_set.weight[row["row"]], expected, rtol=1e-5)


def test_open_refuses_an_incomplete_directory(tmp_path):
    (tmp_path / "ts").mkdir()
    with pytest.raises(TrainingSetError, match=r"lacks \['flux.npy'"):
        open_training_set(tmp_path / "ts")


def test_a_full_disk_fails_clearly_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    from manga_assets.atomic import DiskFullError

    cubes = write_cubes(tmp_path / "cubes", 3, grid=GRID, seed=5)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(DiskFullError, match="disk full: flux.npy needs"):
        build_training_set(cubes, tmp_path / "out" / "ts", grid=GRID, seed=0)
    assert os.listdir(tmp_path / "out") == []


def test_opening_reads_every_file_from_one_version(tmp_path, monkeypatch):
    import manga_assets.model.dataset as dataset

    older = write_cubes(tmp_path / "a", 4, grid=GRID, seed=1)
    build_training_set(older, tmp_path / "ts", grid=GRID)
    newer = write_cubes(tmp_path / "b", 6, grid=GRID, seed=2)
    real_load = np.load
    published = []

    def load_then_publish(path, *args, **kwargs):
        array = real_load(path, *args, **kwargs)
        if str(path).endswith("flux.npy") and not published:
            # A new version is published between the first file and the rest.
            published.append(True)
            build_training_set(newer, tmp_path / "ts", grid=GRID)
        return array

    monkeypatch.setattr(dataset.np, "load", load_then_publish)
    training_set = open_training_set(tmp_path / "ts")
    monkeypatch.undo()
    assert published and open_training_set(tmp_path / "ts").meta["n_galaxies"] == 6
    rows = (training_set.flux.shape[0], training_set.weight.shape[0], len(training_set.index))
    assert rows == (4, 4, 4)
    assert training_set.meta["n_galaxies"] == 4
