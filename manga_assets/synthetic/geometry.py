"""The pixel grid of a MAPS file, the IFU's hexagonal footprint and a galaxy's disk coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manga_assets.dap.datamodel import SPAXEL_ARCSEC
from manga_assets.synthetic.spec import FOOTPRINT_DIAMETER_ARCSEC, MAP_SIZE_PIXELS


@dataclass(frozen=True)
class MapGrid:
    """Sky offsets of every spaxel of a square map centred on the IFU.

    Attributes
    ----------
    size : int
        Map side in spaxels (0.5 arcsec each).
    x, y : numpy.ndarray
        (size, size) float32 sky-right offsets from the IFU centre in arcsec: +x toward +RA
        (east, which is toward lower column index, as on the sky), +y toward +Dec (higher row).
    footprint : numpy.ndarray
        (size, size) bool, True inside the bundle's hexagon (spaxels with coverage).
    """

    size: int
    x: np.ndarray
    y: np.ndarray
    footprint: np.ndarray

    @property
    def centre_pixel(self) -> float:
        """Row/column of the IFU centre (between pixels for even sizes)."""
        return (self.size - 1) / 2.0


def map_grid(ifu_size: int) -> MapGrid:
    """The grid of a MAPS file of an ``ifu_size``-fibre bundle.

    The footprint is a regular hexagon with a corner-to-corner diameter of
    :data:`~manga_assets.synthetic.spec.FOOTPRINT_DIAMETER_ARCSEC` and corners on the +-x axis.
    """
    size = MAP_SIZE_PIXELS[ifu_size]
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    x = -(cols - centre) * SPAXEL_ARCSEC
    y = (rows - centre) * SPAXEL_ARCSEC
    radius = FOOTPRINT_DIAMETER_ARCSEC[ifu_size] / 2.0
    sqrt3 = np.float32(np.sqrt(3.0))
    footprint = (np.abs(y) <= radius * sqrt3 / 2) & (
        sqrt3 * np.abs(x) + np.abs(y) <= sqrt3 * radius
    )
    return MapGrid(size=size, x=x, y=y, footprint=footprint)


@dataclass(frozen=True)
class DiskCoordinates:
    """Where each spaxel lies in a thin inclined disk.

    Attributes
    ----------
    radius : numpy.ndarray
        Deprojected (in-plane) radius in arcsec.
    azimuth : numpy.ndarray
        In-plane azimuth in radians from the receding major axis.
    sky_radius : numpy.ndarray
        Projected circular distance from the centre in arcsec (for unresolved nuclei).
    """

    radius: np.ndarray
    azimuth: np.ndarray
    sky_radius: np.ndarray


def disk_coordinates(
    grid: MapGrid, axis_ratio: float, position_angle_deg: float, centre: tuple[float, float]
) -> DiskCoordinates:
    """Disk coordinates of ``grid`` for a disk with apparent ``axis_ratio`` (b/a).

    Parameters
    ----------
    grid : MapGrid
        The map.
    axis_ratio : float
        Apparent minor-to-major axis ratio b/a.
    position_angle_deg : float
        Position angle of the major axis, degrees east of north.
    centre : (float, float)
        Galaxy centre (x, y) in arcsec sky offsets.
    """
    dx = grid.x - np.float32(centre[0])
    dy = grid.y - np.float32(centre[1])
    pa = np.deg2rad(position_angle_deg)
    along = dx * np.float32(np.sin(pa)) + dy * np.float32(np.cos(pa))
    across = (-dx * np.float32(np.cos(pa)) + dy * np.float32(np.sin(pa))) / np.float32(axis_ratio)
    return DiskCoordinates(
        radius=np.hypot(along, across),
        azimuth=np.arctan2(across, along),
        sky_radius=np.hypot(dx, dy),
    )
