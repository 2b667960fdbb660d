"""Chi-square means the same on every bundle size: extracted IVAR matches the noise it describes.

Two noise realisations of the same synthetic galaxies (correlated spaxel noise, as MaNGA's) are
extracted by the pipeline and compared (`manga_assets.cubes.realisations`). Large bundles go onto
the 32x32 grid with ~2.25 x 2.25 spaxels per cell, so ignoring the spaxels' covariance would
inflate the chi-square most there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from manga_assets.cubes.cube_file import Cube, read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.cubes.realisations import (
    compared_pixels,
    difference_chi_square,
    same_spaxel_cells,
)
from manga_assets.model.normalise import Normalisation, galaxy_scale
from manga_assets.synthetic.population import GalaxyParams, plan_release
from manga_assets.synthetic.release import rewrite_galaxy
from manga_assets.synthetic.spec import SyntheticReleaseSpec

BUNDLE_SIZES = (19, 37, 61, 91, 127)
GALAXIES_PER_SIZE = 4
# One plate holding every bundle size; lean files keep writing them quick.
SPEC = SyntheticReleaseSpec(
    n_plates=1,
    n_cubes=GALAXIES_PER_SIZE * len(BUNDLE_SIZES),
    galaxies_per_plate=GALAXIES_PER_SIZE * len(BUNDLE_SIZES),
    ifu_mix=tuple((size, GALAXIES_PER_SIZE) for size in BUNDLE_SIZES),
    lean=True,
    seed=11,
)
INDEPENDENT = ExtractionSettings(correlation_sigma=0.0)


@dataclass(frozen=True)
class Pair:
    """One galaxy extracted from two noise realisations, with and without the covariance."""

    galaxy: GalaxyParams
    correlated: tuple[Cube, Cube]
    independent: tuple[Cube, Cube]
    same_spaxels: np.ndarray  # bool (lines, grid, grid): cells whose valid spaxels agree


def _usable(galaxy: GalaxyParams) -> bool:
    # A garbled line is shuffled anew in each realisation: its difference is not noise.
    return galaxy.dap_done and galaxy.anomaly_kind != "garbled_line"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[Pair]:
    scratch = tmp_path_factory.mktemp("noise_floor")
    settings = {"correlated": ExtractionSettings(), "independent": INDEPENDENT}
    out = []
    for galaxy in filter(_usable, plan_release(SPEC)):
        cubes: dict[tuple[int, str], Cube] = {}
        maps = []
        for offset in (1, 2):
            maps.append(rewrite_galaxy(scratch / f"r{offset}", SPEC, galaxy.plateifu, offset))
            for name, setting in settings.items():
                cube_path = scratch / f"{galaxy.plateifu}-{offset}-{name}.npz"
                extract_galaxy(maps[-1], cube_path, setting)
                cubes[offset, name] = read_cube(cube_path)
        out.append(
            Pair(
                galaxy,
                (cubes[1, "correlated"], cubes[2, "correlated"]),
                (cubes[1, "independent"], cubes[2, "independent"]),
                same_spaxel_cells(maps[0], maps[1], settings["correlated"]),
            )
        )
    return out


def chi_square_per_pixel(first: Cube, second: Cube, same_spaxels: np.ndarray) -> float:
    """In DAP units."""
    return difference_chi_square(first, second, same_spaxels)


def normalised_chi_square_per_pixel(first: Cube, second: Cube, same_spaxels: np.ndarray) -> float:
    """The same in the galaxy's normalised linear units: x = f / s, w = ivar * s^2."""
    valid = compared_pixels(first, second, same_spaxels)
    scale = galaxy_scale(first.flux, valid, first.lines, Normalisation())
    return difference_chi_square(first, second, same_spaxels, scale)


def _medians(pairs: list[Pair], which: str, statistic=chi_square_per_pixel) -> dict[int, float]:
    by_size: dict[int, list[float]] = {}
    for pair in pairs:
        value = statistic(*getattr(pair, which), pair.same_spaxels)
        by_size.setdefault(pair.galaxy.ifu_size, []).append(value)
    return {size: float(np.median(values)) for size, values in sorted(by_size.items())}


def test_every_bundle_size_is_represented(pairs):
    sizes = [pair.galaxy.ifu_size for pair in pairs]
    assert all(sizes.count(size) >= GALAXIES_PER_SIZE - 2 for size in BUNDLE_SIZES), sizes


def test_two_realisations_differ_by_one_sigma_per_pixel_on_every_bundle_size(pairs):
    medians = _medians(pairs, "correlated")
    assert set(medians) == set(BUNDLE_SIZES)
    for size, median in medians.items():
        assert median == pytest.approx(1.0, abs=0.05), (size, medians)


def test_normalised_units_give_the_same_chi_square(pairs):
    for pair in pairs:
        physical = chi_square_per_pixel(*pair.correlated, pair.same_spaxels)
        normalised = normalised_chi_square_per_pixel(*pair.correlated, pair.same_spaxels)
        assert normalised == pytest.approx(physical, rel=1e-4), pair.galaxy.plateifu
    for size, median in _medians(pairs, "correlated", normalised_chi_square_per_pixel).items():
        assert median == pytest.approx(1.0, abs=0.05), size


def test_ignoring_the_covariance_overstates_ivar_most_on_large_bundles(pairs):
    # The test above has the power to fail: independent-spaxel IVAR is several times too large.
    medians = _medians(pairs, "independent")
    assert medians[127] > 3.0, medians
    assert medians[127] > medians[19] > 1.5, medians
