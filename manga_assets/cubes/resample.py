"""Area-weighted resampling of DAP maps onto a fixed square grid.

The whole map (the DRP cube's field, sized to the galaxy by the choice of IFU bundle) is divided
into ``grid x grid`` equal cells. A cell holds the mean flux per DAP spaxel of the valid spaxels it
covers, each weighted by its overlap area. So a constant map stays constant, the cube keeps DAP
units (1E-17 erg/s/cm^2/spaxel), and a line that is a fixed multiple of another keeps that ratio.

The weights separate into a row and a column matrix, so resampling a (lines, ny, nx) stack is two
small matrix products per line instead of a loop over spaxels.

DAP spaxels are not independent: the DRP builds its 0.5-arcsec cubes from 2-arcsec fibres, so
neighbouring spaxels share photons. Westfall et al. (2019, AJ 158, 231, Sect. 6.2) found the
correlation of two spaxels a distance D apart to be rho(D) = exp(-D^2 / (2 sigma^2)) with
sigma = 1.92 spaxels, and the DAP documentation advises the same for its maps. Ignoring it makes
the IVAR of a cell that averages several spaxels several times too large (the more spaxels per
cell, i.e. the larger the bundle, the worse), so a cell's variance here sums the covariance of
every pair of valid spaxels it covers.
"""

from __future__ import annotations

import numpy as np

# Gaussian correlation length of DAP spaxels (Westfall et al. 2019), in spaxels.
SPAXEL_CORRELATION_SIGMA = 1.92


def overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Overlap lengths of ``n_out`` equal output cells with ``n_in`` unit input pixels.

    Returns
    -------
    ndarray, float64, (n_out, n_in)
        Element (i, j) is the length of input pixel j inside output cell i, in input pixels.
        Every column sums to 1 and every row to ``n_in / n_out``.
    """
    edges_out = np.linspace(0.0, n_in, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    return np.clip(hi - lo, 0.0, None)


def _band(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The overlap matrix in band storage: each cell's consecutive input pixels and weights.

    Returns
    -------
    index : ndarray of int, (n_out, width)
        Input pixel k of cell i is ``index[i, k]`` (clipped to the map; its weight is then 0).
    band : ndarray, float64, (n_out, width)
        ``weights[i, index[i, k]]``; ``width`` is the most input pixels any cell touches.
    """
    n_out, n_in = weights.shape
    covered = weights > 0
    first = covered.argmax(axis=1)
    last = n_in - 1 - covered[:, ::-1].argmax(axis=1)
    offsets = np.arange(int((last - first).max()) + 1)
    raw = first[:, None] + offsets[None, :]
    index = np.minimum(raw, n_in - 1)
    band = np.where(raw < n_in, weights[np.arange(n_out)[:, None], index], 0.0)
    return index, band


def gaussian_correlation(separation: np.ndarray, correlation_sigma: float) -> np.ndarray:
    """rho(D) = exp(-D^2 / (2 sigma^2)) for separations in spaxels; sigma 0 gives rho = [D == 0]."""
    separation = np.asarray(separation, dtype=np.float64)
    if correlation_sigma == 0:
        return (separation == 0).astype(np.float64)
    return np.exp(-(separation**2) / (2.0 * correlation_sigma**2))


def correlated_variance(
    rows: np.ndarray, cols: np.ndarray, sigma_map: np.ndarray, correlation_sigma: float
) -> np.ndarray:
    """Variance of the area-weighted sums of Gaussian-correlated spaxels that make each cell.

    Parameters
    ----------
    rows, cols : ndarray, (grid_y, ny) and (grid_x, nx)
        Overlap matrices (:func:`overlap_matrix`) of the cells with the spaxel rows and columns.
    sigma_map : ndarray, (lines, ny, nx)
        Noise standard deviation of each spaxel, 0 where the spaxel is not used.
    correlation_sigma : float
        Gaussian correlation length in spaxels; 0 treats spaxels as independent.

    Returns
    -------
    ndarray, float64, (lines, grid_y, grid_x)
        sum_{p,q} a_p a_q s_p s_q rho(D_pq) over the spaxels p, q each cell covers, with a the
        overlap area, s the noise and rho(D) = exp(-D^2 / (2 correlation_sigma^2)).

    Notes
    -----
    Two spaxels contribute only if both overlap the cell, and a cell overlaps a few consecutive
    rows and columns (3 x 3 when a 72-spaxel map goes onto 32 cells), so the double sum is exact,
    not truncated: gather each cell's window t = a * s (lines, gy, gx, wy, wx), then
    var = sum(t * (Ry @ t @ Rx)). The Gaussian factorises, rho(D) = rho(dy) rho(dx), and the
    offsets between rows of one window are k - k', so Ry and Rx are small fixed Toeplitz matrices.
    """
    row_index, row_band = _band(rows)
    col_index, col_band = _band(cols)
    # (lines, wy, wx, gy, gx): noise of the spaxels in each cell's window, times their overlap.
    window = sigma_map[:, row_index.T[:, None, :, None], col_index.T[None, :, None, :]]
    window *= row_band.T[:, None, :, None] * col_band.T[None, :, None, :]
    ky, kx = np.arange(row_band.shape[1]), np.arange(col_band.shape[1])
    rho_y = gaussian_correlation(ky[:, None] - ky[None, :], correlation_sigma)
    rho_x = gaussian_correlation(kx[:, None] - kx[None, :], correlation_sigma)
    # One small contraction at a time (einsum's loops beat batched 3x3 matrix products here).
    correlated = np.einsum("mM,lkMij->lkmij", rho_x, window)
    correlated = np.einsum("kK,lKmij->lkmij", rho_y, correlated)
    return np.einsum("lkmij,lkmij->lij", window, correlated)


def resample_maps(
    flux: np.ndarray,
    ivar: np.ndarray,
    invalid: np.ndarray,
    grid: int,
    *,
    min_valid_fraction: float = 0.5,
    correlation_sigma: float = SPAXEL_CORRELATION_SIGMA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample (lines, ny, nx) maps onto (lines, grid, grid) cells.

    Parameters
    ----------
    flux : ndarray, (lines, ny, nx)
        Flux per DAP spaxel; values where ``invalid`` is True are ignored.
    ivar : ndarray, (lines, ny, nx)
        Inverse variance of ``flux``.
    invalid : ndarray of bool, (lines, ny, nx)
        True where a spaxel must not be used.
    grid : int
        Output cells per side.
    min_valid_fraction : float, optional
        A cell whose area is covered by valid spaxels less than this fraction is invalid.
    correlation_sigma : float, optional
        Gaussian correlation length of the spaxels' noise, in spaxels; by default
        :data:`SPAXEL_CORRELATION_SIGMA` (MaNGA). 0 treats spaxels as independent.

    Returns
    -------
    flux, ivar : ndarray, float32, (lines, grid, grid)
        Area-weighted mean flux per DAP spaxel and its inverse variance, including the
        covariance of the spaxels a cell averages; 0 in invalid cells.
    mask : ndarray of bool, (lines, grid, grid)
        True where the cell is invalid.
    """
    if correlation_sigma < 0:
        raise ValueError(f"correlation_sigma must be >= 0 spaxels, got {correlation_sigma!r}")
    _, ny, nx = flux.shape
    rows, cols = overlap_matrix(ny, grid), overlap_matrix(nx, grid)
    valid = (~invalid).astype(np.float64)
    value = np.where(invalid, 0.0, flux.astype(np.float64))
    used = ~invalid & (ivar > 0)
    sigma_map = np.zeros_like(value)
    np.divide(1.0, ivar, out=sigma_map, where=used)
    np.sqrt(sigma_map, out=sigma_map)

    # Plain matrix products: einsum's path search costs more than the products themselves here.
    weight = rows @ valid @ cols.T
    weighted_flux = rows @ value @ cols.T
    weighted_variance = correlated_variance(rows, cols, sigma_map, correlation_sigma)
    cell_area = (ny / grid) * (nx / grid)
    # weight > 0 too: with min_valid_fraction 0 an empty cell must not become 0 / 0.
    good = (weight > 0) & (weight >= min_valid_fraction * cell_area)

    out_flux = np.zeros(weight.shape, np.float32)
    out_ivar = np.zeros(weight.shape, np.float32)
    np.divide(weighted_flux, weight, out=out_flux, where=good, casting="unsafe")
    positive = good & (weighted_variance > 0)
    np.divide(weight**2, weighted_variance, out=out_ivar, where=positive, casting="unsafe")
    return out_flux, out_ivar, ~good
