"""The cube file ``cubes/{plate}/{plateifu}.npz``: its contract, its writer and its one reader.

Every reader of cubes (the AGN sample, the report, the training set, inference, the cube check
of ``line_cubes``, the benchmarks) goes through :func:`read_cube`, so a cube is validated one way:
its arrays are present and readable, share one (lines, grid, grid) shape, hold the lines asked
for in their order, and (where asked) are finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manga_assets.atomic import atomic_path

ARRAYS = ("flux", "ivar", "mask")
# What to do about a cube that fails a check: it is a product, so making it again is the fix.
REBUILD = "delete it and rebuild it with the line_cubes asset"


class CubeFormatError(ValueError):
    """A cube file that cannot be read, or does not have the layout its reader asked for."""


@dataclass(frozen=True)
class Cube:
    """One galaxy on the fixed grid (the contract of ``cubes/{plate}/{plateifu}.npz``).

    Attributes
    ----------
    flux : ndarray, float32, (lines, grid, grid)
        Mean flux per DAP spaxel (1E-17 erg/s/cm^2/spaxel) of the area each cell covers; 0 where
        invalid.
    ivar : ndarray, float32, (lines, grid, grid)
        Inverse variance of ``flux``.
    mask : ndarray of bool, (lines, grid, grid)
        True where invalid: DAP-flagged, IVAR 0, or too little valid area in the cell.
    lines : tuple of str
        Line names in wavelength order.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    lines: tuple[str, ...]


def write_cube(path: Path, cube: Cube) -> None:
    """Write ``cube`` as an uncompressed NPZ, atomically (temporary name, then rename).

    Durable (fsynced before the rename): a cube that exists is taken as done, so after a power
    cut it must not be an empty file under its final name.
    """
    with atomic_path(path, durable=True) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, flux=cube.flux, ivar=cube.ivar, mask=cube.mask, lines=np.array(cube.lines))


def read_cube(
    path: Path | str,
    *,
    plateifu: str | None = None,
    line_names: Sequence[str] | None = None,
    grid: int | None = None,
    finite: bool = False,
) -> Cube:
    """Read and check one cube file written by :func:`write_cube` (no pickle is ever loaded).

    Parameters
    ----------
    path : Path
        The NPZ file.
    plateifu : str, optional
        The galaxy, named in error messages (default the file's stem).
    line_names : sequence of str, optional
        Lines the cube must hold, in this order; a file without a ``lines`` array is taken to
        hold them. None accepts the file's own lines.
    grid : int, optional
        Required map side; None accepts any square size.
    finite : bool
        Also require every flux and IVAR value to be finite.

    Returns
    -------
    Cube
        ``flux`` and ``ivar`` as float32, ``mask`` as bool.

    Raises
    ------
    CubeFormatError
        If the file cannot be read, lacks an array, or has other lines, another shape or (with
        ``finite``) non-finite values; the message names the galaxy, the file and what to do.
    """
    name = f"cube {plateifu or Path(path).stem} ({path})"
    wanted = None if line_names is None else tuple(line_names)
    try:
        with np.load(path, allow_pickle=False) as npz:
            required = ARRAYS if wanted is not None else (*ARRAYS, "lines")
            missing = [array for array in required if array not in npz.files]
            if missing:
                raise CubeFormatError(f"{name} lacks the arrays {missing}; {REBUILD}")
            flux = np.asarray(npz["flux"], dtype=np.float32)
            ivar = np.asarray(npz["ivar"], dtype=np.float32)
            mask = np.asarray(npz["mask"], dtype=bool)
            lines = tuple(str(line) for line in npz["lines"]) if "lines" in npz.files else wanted
    except CubeFormatError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise CubeFormatError(f"{name} cannot be read ({error}); {REBUILD}") from error
    if wanted is not None and lines != wanted:
        raise CubeFormatError(
            f"{name} holds the lines {list(lines)}, but its reader needs {list(wanted)} in this "
            f"order; rebuild the cubes or the model with the same lines"
        )
    side = grid or flux.shape[-1]
    expected = (len(lines), side, side)
    for array_name, array in (("flux", flux), ("ivar", ivar), ("mask", mask)):
        if array.shape != expected:
            raise CubeFormatError(
                f"{name} has {array_name} of shape {array.shape}, expected {expected} "
                f"({len(lines)} lines on a {side}x{side} grid); rebuild the cubes or the training "
                f"set with the same grid"
            )
    if finite:
        for array_name, array in (("flux", flux), ("ivar", ivar)):
            if not np.isfinite(array).all():
                raise CubeFormatError(f"{name} has non-finite values in {array_name}; {REBUILD}")
    return Cube(flux=flux, ivar=ivar, mask=mask, lines=lines)
