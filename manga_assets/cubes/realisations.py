"""Two noise realisations of one galaxy: the chi-square of their difference checks the cube's IVAR.

The difference of two realisations is pure noise with variance 1/ivar1 + 1/ivar2, so its
chi-square per valid pixel is 1 when the extracted IVAR describes the noise, on every bundle size.

Each realisation also flags its own failed fits and UNRELIABLE values. A cell that lost a spaxel
in one realisation only averages another patch of sky, which on a steep bright profile differs by
signal, not noise; so the pixels compared are those valid in both that average the same spaxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from manga_assets.cubes.cube_file import Cube
from manga_assets.cubes.extract import ExtractionSettings
from manga_assets.cubes.resample import overlap_matrix
from manga_assets.dap.maps import read_maps
from manga_assets.model.normalise import valid_pixels


def same_spaxel_cells(first: Path, second: Path, settings: ExtractionSettings) -> np.ndarray:
    """Cells (lines, grid, grid) that cover no spaxel valid in one MAPS file and not the other."""
    invalid = [
        read_maps(path, lines=settings.lines, invalid_bits=settings.invalid_bits).invalid
        for path in (first, second)
    ]
    changed = (invalid[0] != invalid[1]).astype(np.float64)
    _, ny, nx = changed.shape
    rows, cols = overlap_matrix(ny, settings.grid), overlap_matrix(nx, settings.grid)
    return (rows @ changed @ cols.T) == 0


def compared_pixels(first: Cube, second: Cube, same_spaxels: np.ndarray) -> np.ndarray:
    """Pixels valid in both cubes that average the same spaxels."""
    valid = valid_pixels(first.flux, first.mask, first.ivar)
    return valid & valid_pixels(second.flux, second.mask, second.ivar) & same_spaxels


def difference_chi_square(
    first: Cube, second: Cube, same_spaxels: np.ndarray, scale: float = 1.0
) -> float:
    """Mean of (x1 - x2)^2 / (1/w1 + 1/w2) over the compared pixels.

    With ``scale`` s, in the galaxy's normalised units x = f / s and w = ivar s^2 (the units of
    the models' loss); the value is the same in any units.
    """
    valid = compared_pixels(first, second, same_spaxels)
    x1 = first.flux[valid].astype(np.float64) / scale
    x2 = second.flux[valid].astype(np.float64) / scale
    w1 = first.ivar[valid].astype(np.float64) * scale**2
    w2 = second.ivar[valid].astype(np.float64) * scale**2
    return float(np.mean((x1 - x2) ** 2 / (1 / w1 + 1 / w2)))
