from __future__ import annotations

import numpy as np
import pytest
import torch

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.normalise import (
    Normalisation,
    denormalise,
    galaxy_scale,
    normalise,
    valid_pixels,
)
from manga_assets_tests.test_model.cubes import make_cube

HA = PROJECT_LINES.index("Ha-6564")
NORMALISATION = Normalisation()


@pytest.fixture
def cube():
    flux, ivar, mask = make_cube(np.random.default_rng(0), 16)
    return flux, valid_pixels(flux, mask, ivar)


def test_one_scale_per_galaxy_keeps_line_ratios(cube):
    flux, valid = cube
    scale = galaxy_scale(flux, valid, PROJECT_LINES, NORMALISATION)
    x = normalise(flux, valid, scale, NORMALISATION)
    back = denormalise(x, scale, NORMALISATION)
    np.testing.assert_allclose(back[valid], flux[valid], rtol=1e-5, atol=1e-6 * scale)
    # [NII]/Ha pixel by pixel, from the normalised maps, equals the ratio in the cube.
    nii = PROJECT_LINES.index("NII-6585")
    bright = valid[nii] & valid[HA] & (flux[HA] > 0.1 * scale)
    np.testing.assert_allclose(
        back[nii][bright] / back[HA][bright], flux[nii][bright] / flux[HA][bright], rtol=1e-4
    )


def test_brightness_does_not_change_the_normalised_cube(cube):
    flux, valid = cube
    scale = galaxy_scale(flux, valid, PROJECT_LINES, NORMALISATION)
    brighter_scale = galaxy_scale(flux * 37.0, valid, PROJECT_LINES, NORMALISATION)
    assert brighter_scale == pytest.approx(37.0 * scale)
    np.testing.assert_allclose(
        normalise(flux * 37.0, valid, brighter_scale, NORMALISATION),
        normalise(flux, valid, scale, NORMALISATION),
        atol=1e-6,
    )


def test_scale_is_the_reference_line_percentile_with_fallbacks(cube):
    flux, valid = cube
    expected = np.percentile(flux[HA][valid[HA] & (flux[HA] > 0)], 99.0)
    assert galaxy_scale(flux, valid, PROJECT_LINES, NORMALISATION) == pytest.approx(expected)

    no_halpha = valid.copy()
    no_halpha[HA] = False
    others = flux[no_halpha]
    fallback = np.percentile(others[others > 0], 99.0)
    assert galaxy_scale(flux, no_halpha, PROJECT_LINES, NORMALISATION) == pytest.approx(fallback)

    assert galaxy_scale(-np.abs(flux), valid, PROJECT_LINES, NORMALISATION) == 1.0


def test_stretch_values_and_invalid_pixels_are_zero(cube):
    flux, valid = cube
    x = normalise(flux, valid, 2.0, NORMALISATION)
    assert x.dtype == np.float32
    assert np.all(x[~valid] == 0)
    # f = scale maps to 1; small fluxes are linear with slope 1 / (a asinh(1/a)).
    one = normalise(np.array([[[2.0, 2e-4]]]), np.ones((1, 1, 2), bool), 2.0, NORMALISATION)
    a = NORMALISATION.softening
    assert one[0, 0, 0] == pytest.approx(1.0)
    assert one[0, 0, 1] == pytest.approx(1e-4 / (a * np.arcsinh(1 / a)), rel=1e-4)


def test_numpy_and_torch_agree_and_scales_broadcast_per_cube():
    rng = np.random.default_rng(1)
    flux = rng.normal(0, 5, (3, 19, 4, 4)).astype(np.float32)
    valid = rng.random(flux.shape) > 0.2
    scales = np.array([1.0, 10.0, 0.5])
    with_numpy = normalise(flux, valid, scales, NORMALISATION)
    with_torch = normalise(
        torch.from_numpy(flux), torch.from_numpy(valid), torch.from_numpy(scales), NORMALISATION
    )
    np.testing.assert_allclose(with_torch.numpy(), with_numpy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        with_numpy[1], normalise(flux[1], valid[1], 10.0, NORMALISATION), rtol=1e-6
    )
    np.testing.assert_allclose(
        denormalise(torch.from_numpy(with_numpy), torch.from_numpy(scales), NORMALISATION).numpy()[
            valid
        ],
        flux[valid],
        rtol=1e-4,
        atol=1e-4,
    )


def test_valid_pixels_uses_mask_ivar_and_finiteness():
    flux = np.array([1.0, np.nan, 1.0, 1.0], dtype=np.float32)
    mask = np.array([False, False, True, False])
    ivar = np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32)
    assert valid_pixels(flux, mask, ivar).tolist() == [True, False, False, False]
    assert valid_pixels(flux, mask).tolist() == [True, False, False, True]
