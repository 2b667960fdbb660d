"""Area-weighted resampling of DAP maps onto a fixed square grid.

The whole map (the DRP cube's field, sized to the galaxy by the choice of IFU bundle) is divided
into ``grid x grid`` equal cells. A cell holds the mean flux per DAP spaxel of the valid spaxels it
covers, each weighted by its overlap area. So a constant map stays constant, the cube keeps DAP
units (1E-17 erg/s/cm^2/spaxel), and a line that is a fixed multiple of another keeps that ratio.

The weights separate into a row and a column matrix, so resampling a (lines, ny, nx) stack is two
small matrix products per line instead of a loop over spaxels.
"""

from __future__ import annotations

import numpy as np


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


def resample_maps(
    flux: np.ndarray,
    ivar: np.ndarray,
    invalid: np.ndarray,
    grid: int,
    *,
    min_valid_fraction: float = 0.5,
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

    Returns
    -------
    flux, ivar : ndarray, float32, (lines, grid, grid)
        Area-weighted mean flux per DAP spaxel and its inverse variance; 0 in invalid cells.
    mask : ndarray of bool, (lines, grid, grid)
        True where the cell is invalid.
    """
    _, ny, nx = flux.shape
    rows, cols = overlap_matrix(ny, grid), overlap_matrix(nx, grid)
    valid = (~invalid).astype(np.float64)
    value = np.where(invalid, 0.0, flux.astype(np.float64))
    variance = np.zeros_like(value)
    np.divide(1.0, ivar, out=variance, where=~invalid & (ivar > 0))

    def weigh(stack: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ljk,mk->lim", r, stack, c, optimize=True)

    weight = weigh(valid, rows, cols)
    weighted_flux = weigh(value, rows, cols)
    weighted_variance = weigh(variance, rows**2, cols**2)
    cell_area = (ny / grid) * (nx / grid)
    good = weight >= min_valid_fraction * cell_area

    out_flux = np.zeros(weight.shape, np.float32)
    out_ivar = np.zeros(weight.shape, np.float32)
    np.divide(weighted_flux, weight, out=out_flux, where=good, casting="unsafe")
    positive = good & (weighted_variance > 0)
    np.divide(weight**2, weighted_variance, out=out_ivar, where=positive, casting="unsafe")
    return out_flux, out_ivar, ~good
