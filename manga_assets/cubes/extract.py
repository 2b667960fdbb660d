"""From a MAPS file to the fixed-grid cube file and the galaxy's features row.

The cube file itself (:class:`Cube`, :func:`write_cube`, :func:`read_cube`) is
:mod:`manga_assets.cubes.cube_file`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from manga_assets.cubes.cube_file import Cube, CubeFormatError, read_cube, write_cube
from manga_assets.cubes.features import galaxy_features
from manga_assets.cubes.resample import SPAXEL_CORRELATION_SIGMA, resample_maps
from manga_assets.dap.datamodel import DEFAULT_INVALID_BITS, PROJECT_LINES

if TYPE_CHECKING:
    from manga_assets.dap.fitsstream import FitsLimits

# The cube file is read and written by cube_file; importers of these names from here still work.
__all__ = [
    "Cube",
    "CubeFormatError",
    "ExtractionSettings",
    "extract_galaxy",
    "read_cube",
    "write_cube",
]

DEFAULT_GRID = 32
# Bump when extraction changes what a cube holds: every cube is then extracted again.
# 2: cell IVAR counts the spatial covariance of the spaxels a cell averages.
EXTRACTION_VERSION = 2


@dataclass(frozen=True)
class ExtractionSettings:
    """How MAPS files become cubes; part of the line_cubes code version.

    ``correlation_sigma`` is the Gaussian correlation length of the spaxels' noise in spaxels
    (:data:`~manga_assets.cubes.resample.SPAXEL_CORRELATION_SIGMA` for MaNGA; 0 treats spaxels as
    independent, which overstates the IVAR of cells that average several spaxels).
    """

    grid: int = DEFAULT_GRID
    lines: tuple[str, ...] = PROJECT_LINES
    invalid_bits: tuple[str, ...] = DEFAULT_INVALID_BITS
    min_valid_fraction: float = 0.5
    correlation_sigma: float = SPAXEL_CORRELATION_SIGMA

    def key(self) -> str:
        """A short digest of the settings and the extraction code version."""
        text = f"{EXTRACTION_VERSION}|{self.grid}|{self.lines}|{self.invalid_bits}|"
        text += f"{self.min_valid_fraction}|{self.correlation_sigma}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def extract_galaxy(
    maps_path: Path,
    cube_path: Path,
    settings: ExtractionSettings,
    *,
    expected_dapver: str | None = None,
    expected_daptype: str | None = None,
    limits: FitsLimits | None = None,
) -> dict[str, float | int | str]:
    """Read a MAPS file, write its cube, and return its features row.

    ``expected_dapver`` is the configured release's DAP version: the file must have its layout
    (see :func:`manga_assets.dap.maps.read_maps`); the row's ``versdap`` is the file's own.
    ``limits`` bounds what the file may make the reader read (default the reader's own).
    Raises the typed errors of :func:`manga_assets.dap.maps.read_maps`; the caller decides how a
    broken galaxy is recorded.
    """
    # astropy loads here, not when the code location imports this module (every run's start).
    from manga_assets.dap.fitsstream import DEFAULT_LIMITS
    from manga_assets.dap.maps import read_maps

    maps = read_maps(
        maps_path,
        lines=settings.lines,
        invalid_bits=settings.invalid_bits,
        expected_dapver=expected_dapver,
        expected_daptype=expected_daptype,
        limits=limits or DEFAULT_LIMITS,
    )
    flux, ivar, mask = resample_maps(
        maps.flux, maps.ivar, maps.invalid, settings.grid,
        min_valid_fraction=settings.min_valid_fraction,
        correlation_sigma=settings.correlation_sigma,
    )  # fmt: skip
    write_cube(cube_path, Cube(flux, ivar, mask, maps.lines))
    row: dict[str, float | int | str] = {
        "map_ny": maps.flux.shape[1],
        "map_nx": maps.flux.shape[2],
        "redshift": maps.redshift,
        "n_nonfinite": maps.n_nonfinite,
        "valid_fraction": float((~mask).mean()),
        "n_valid_pixels": int((~mask).sum()),
        # The DAP version that wrote the file: a release's files may carry patch versions.
        "versdap": maps.dapver,
    }
    row.update(galaxy_features(maps.lines, maps.flux, maps.ivar, maps.invalid))
    return row
