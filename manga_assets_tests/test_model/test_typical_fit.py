"""No galaxy decides alone: early stopping and the gate read the typical validation galaxy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model import train as train_module
from manga_assets.model.dataset import build_training_set, open_training_set, split_of
from manga_assets.model.quality import assess_model, model_chi_square
from manga_assets.model.train import TrainConfig, train_model
from manga_assets.model.typical_fit import galaxy_fev, typical_fev
from manga_assets_tests.test_model.conftest import DEVICE, GRID, tiny_config
from manga_assets_tests.test_model.cubes import make_cube, write_cube, write_cubes


def bright_odd_cube(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A galaxy at S/N ~2000 whose 19 lines all share H-alpha's map and flux: flat line-ratio
    maps at ratios no normal galaxy has."""
    flux, ivar, mask = make_cube(np.random.default_rng(seed), GRID, "sf", noise=0.0005)
    halpha = PROJECT_LINES.index("Ha-6564")
    flux[:] = flux[halpha]
    ivar[:] = ivar[halpha]
    mask[:] = mask[halpha]
    return flux, ivar, mask


def validation_plateifu(seed: int = 0) -> str:
    """A plate-IFU after every other one (so the other rows keep their order) that the hash
    split puts in the validation split."""
    for ifu in range(1901, 1999):
        plateifu = f"9999-{ifu}"
        if split_of(plateifu, seed, 0.15) == "val":
            return plateifu
    raise AssertionError("no validation plate-IFU found")


@pytest.fixture(scope="module")
def with_and_without_odd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("odd")
    cubes = write_cubes(root, 96, grid=GRID, seed=1)
    odd = validation_plateifu()
    cubes_with_odd = [*cubes, (odd, write_cube(root, odd, *bright_odd_cube()))]
    sets = {"without": root / "without", "with": root / "with"}
    build_training_set(cubes, sets["without"], grid=GRID, seed=0)
    build_training_set(cubes_with_odd, sets["with"], grid=GRID, seed=0)
    return sets


def test_one_bright_odd_validation_galaxy_decides_neither_the_epoch_nor_the_gate(
    with_and_without_odd, tmp_path, monkeypatch
):
    # The split is small (a test budget): let its median choose the epoch all the same.
    monkeypatch.setattr(train_module, "MIN_TYPICAL_GALAXIES", 1)
    config = TrainConfig(
        epochs=16, learning_rate=5e-3, batch_size=8, patience=16, seed=0, num_threads=1,
        device=DEVICE,
    )  # fmt: skip
    results = {
        name: train_model(tiny_config(), config, path, tmp_path / name)
        for name, path in with_and_without_odd.items()
    }
    # The gate, for one model, with and without the odd galaxy among those it reads.
    reports = {
        name: assess_model(
            results["without"].model, open_training_set(path), min_galaxies_to_block=1
        )
        for name, path in with_and_without_odd.items()
    }
    with_odd = open_training_set(with_and_without_odd["with"])
    odd_row = with_odd.rows("val")[-1]
    assert with_odd.plateifus([odd_row]) == [validation_plateifu()]
    # The odd galaxy would decide any pooled statistic: most of the validation chi-square is its.
    chi2, _, _, _ = model_chi_square(results["with"].model, with_odd, with_odd.rows("val"))
    assert chi2[-1] > chi2[:-1].sum()

    # One more validation galaxy, odd or not, moves the median by at most one order statistic,
    # so epochs whose typical fits differ by less may swap: the epoch kept with the odd galaxy
    # must be one that is (nearly) best without it, as close as the gate's FEV.
    without = results["without"]
    kept_with_odd = without.history[results["with"].best_epoch - 1]["val_fev"]
    assert kept_with_odd >= without.history[without.best_epoch - 1]["val_fev"] - 0.05
    assert reports["with"].passed == reports["without"].passed
    # However bright and odd, the galaxy moves the gate's statistic no further than one galaxy
    # fitted worse, or better, than any other could.
    without_set = open_training_set(with_and_without_odd["without"])
    others = galaxy_fev(*model_chi_square(without.model, without_set, without_set.rows("val"))[:3])
    lowest, highest = (typical_fev(np.append(others, extreme)) for extreme in (-1e6, 1e6))
    assert lowest - 1e-9 <= reports["with"].fev <= highest + 1e-9


def test_leaving_out_any_validation_galaxy_moves_the_gate_statistic_little(
    trained_ae, easy_training_set
):
    training_set = open_training_set(easy_training_set)
    val_rows = training_set.rows("val")
    chi2, chi2_mean_map, counts, _ = model_chi_square(trained_ae.model, training_set, val_rows)
    fev = galaxy_fev(chi2, chi2_mean_map, counts)
    everyone = typical_fev(fev)
    assert everyone == pytest.approx(assess_model(trained_ae.model, training_set).fev)
    shifts = [abs(typical_fev(np.delete(fev, i)) - everyone) for i in range(len(fev))]
    assert len(fev) >= 20 and max(shifts) <= 0.05


def test_galaxies_without_line_emission_have_no_fev():
    counts = np.array([100, 100, 100])
    mean_map = np.array([500.0, 150.0, 110.0])  # 5, 1.5 and 1.1 per pixel
    model = np.array([200.0, 120.0, 100.0])
    fev = galaxy_fev(model, mean_map, counts)
    assert fev[0] == pytest.approx(0.75)
    assert np.isnan(fev[1:]).all()  # less than the noise again to explain
    assert typical_fev(fev) == pytest.approx(0.75)
    assert np.isnan(typical_fev(fev[1:]))
