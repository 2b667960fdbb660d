import numpy as np
import pytest

from manga_assets.cubes.resample import overlap_matrix, resample_maps


def no_mask(shape):
    return np.zeros(shape, bool)


@pytest.mark.parametrize(("n_in", "n_out"), [(34, 32), (72, 32), (54, 32), (20, 32)])
def test_overlap_matrix_splits_every_input_pixel_once(n_in, n_out):
    weights = overlap_matrix(n_in, n_out)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    np.testing.assert_allclose(weights.sum(axis=1), n_in / n_out)


def test_a_constant_map_stays_constant_in_dap_units():
    flux = np.full((2, 72, 72), 7.5, np.float32)
    out, ivar, mask = resample_maps(flux, np.ones_like(flux), no_mask(flux.shape), 32)
    assert not mask.any()
    np.testing.assert_allclose(out, 7.5, rtol=1e-6)


def test_total_flux_is_conserved_when_every_spaxel_is_valid():
    rng = np.random.default_rng(1)
    flux = rng.random((3, 54, 54)).astype(np.float32)
    out, _, _ = resample_maps(flux, np.ones_like(flux), no_mask(flux.shape), 32)
    cell_area = (54 / 32) ** 2
    np.testing.assert_allclose(out.sum(axis=(1, 2)) * cell_area, flux.sum(axis=(1, 2)), rtol=1e-5)


def test_a_line_proportional_to_another_keeps_the_ratio_with_masks():
    rng = np.random.default_rng(2)
    ha = rng.random((42, 42)).astype(np.float32) + 0.1
    flux = np.stack([ha, 0.35 * ha])
    invalid = np.zeros(flux.shape, bool)
    invalid[:, rng.random((42, 42)) < 0.3] = True
    out, _, mask = resample_maps(flux, np.ones_like(flux), invalid, 32)
    good = ~mask[0]
    assert good.sum() > 500
    np.testing.assert_allclose(out[1][good] / out[0][good], 0.35, rtol=1e-5)


def test_cells_with_too_little_valid_area_are_masked():
    flux = np.ones((1, 64, 64), np.float32)
    invalid = np.zeros(flux.shape, bool)
    invalid[0, :, :32] = True  # left half outside the footprint
    out, ivar, mask = resample_maps(flux, np.ones_like(flux), invalid, 32)
    assert mask[0, :, :16].all() and not mask[0, :, 16:].any()
    assert (out[mask] == 0).all() and (ivar[mask] == 0).all()


def test_ivar_of_a_cell_is_that_of_the_weighted_mean():
    # 2x2 spaxels per cell, each with variance 1/4: the mean of four has variance 1/16.
    flux = np.zeros((1, 64, 64), np.float32)
    _, ivar, _ = resample_maps(flux, np.full_like(flux, 4.0), no_mask(flux.shape), 32)
    np.testing.assert_allclose(ivar, 16.0, rtol=1e-6)
