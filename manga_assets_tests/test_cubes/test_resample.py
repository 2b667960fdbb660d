import numpy as np
import pytest

from manga_assets.cubes.resample import SPAXEL_CORRELATION_SIGMA, overlap_matrix, resample_maps


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


def test_ivar_of_a_cell_of_independent_spaxels_is_that_of_the_weighted_mean():
    # 2x2 spaxels per cell, each with variance 1/4: the mean of four has variance 1/16.
    flux = np.zeros((1, 64, 64), np.float32)
    _, ivar, _ = resample_maps(
        flux, np.full_like(flux, 4.0), no_mask(flux.shape), 32, correlation_sigma=0.0
    )
    np.testing.assert_allclose(ivar, 16.0, rtol=1e-6)


def test_ivar_of_a_cell_of_correlated_spaxels_counts_their_covariance():
    # 2x2 spaxels per cell, variance 1/4, neighbours at distance 1 (4 ordered pairs) and
    # sqrt(2) (2 pairs): var = (4 + 8 rho(1) + 4 rho(sqrt 2)) / 4 / 16.
    flux = np.zeros((1, 64, 64), np.float32)
    _, ivar, _ = resample_maps(flux, np.full_like(flux, 4.0), no_mask(flux.shape), 32)
    rho1 = np.exp(-1 / (2 * SPAXEL_CORRELATION_SIGMA**2))
    variance = (4 + 8 * rho1 + 4 * rho1**2) / 4 / 16
    np.testing.assert_allclose(ivar, 1 / variance, rtol=1e-6)


def test_perfectly_correlated_spaxels_average_to_no_gain():
    flux = np.zeros((1, 72, 72), np.float32)
    _, ivar, _ = resample_maps(
        flux, np.full_like(flux, 4.0), no_mask(flux.shape), 32, correlation_sigma=1e6
    )
    np.testing.assert_allclose(ivar, 4.0, rtol=1e-6)


def _brute_force_ivar(ivar, invalid, grid, correlation_sigma):
    """The cell variances as the explicit double sum over spaxel pairs."""
    _, ny, nx = ivar.shape
    rows, cols = overlap_matrix(ny, grid), overlap_matrix(nx, grid)
    y, x = np.mgrid[0:ny, 0:nx]
    distance2 = (y.ravel()[:, None] - y.ravel()) ** 2 + (x.ravel()[:, None] - x.ravel()) ** 2
    rho = np.exp(-distance2 / (2 * correlation_sigma**2))
    out = np.zeros((ivar.shape[0], grid, grid))
    for line in range(ivar.shape[0]):
        valid = ~invalid[line]
        noise = np.where(valid, 1 / np.sqrt(ivar[line]), 0.0).ravel()
        for i in range(grid):
            for j in range(grid):
                area = np.outer(rows[i], cols[j])
                weight = (area * valid).sum()
                a = (area * valid).ravel() * noise
                out[line, i, j] = weight**2 / (a @ rho @ a) if weight > 0 else 0.0
    return out


@pytest.mark.parametrize(("size", "grid"), [(18, 8), (12, 16), (13, 5)])
def test_correlated_ivar_matches_the_explicit_double_sum(size, grid):
    rng = np.random.default_rng(size)
    ivar = rng.uniform(0.5, 4.0, (2, size, size)).astype(np.float32)
    invalid = rng.random((2, size, size)) < 0.2
    flux = np.ones_like(ivar)
    _, out, mask = resample_maps(flux, ivar, invalid, grid, min_valid_fraction=0.0)
    expected = _brute_force_ivar(ivar.astype(np.float64), invalid, grid, SPAXEL_CORRELATION_SIGMA)
    np.testing.assert_allclose(out[~mask], expected[~mask], rtol=1e-5)


def test_a_negative_correlation_length_is_refused():
    flux = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="correlation_sigma must be >= 0"):
        resample_maps(flux, np.ones_like(flux), no_mask(flux.shape), 4, correlation_sigma=-1.0)
