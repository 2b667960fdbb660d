"""MANGA_DAPPIXMASK bits in the synthetic MAPS files mean what the DAP means by them."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from manga_assets.dap.datamodel import DAPPIXMASK_BITS
from manga_assets.synthetic.spec import FOOTPRINT_DIAMETER_ARCSEC, MAP_SIZE_PIXELS
from manga_assets_tests.test_synthetic.conftest import healthy_plateifus, read_lines, read_truth

NOCOV = 1 << DAPPIXMASK_BITS["NOCOV"]
DONOTUSE = 1 << DAPPIXMASK_BITS["DONOTUSE"]
MATHERROR = 1 << DAPPIXMASK_BITS["MATHERROR"]
UNRELIABLE = 1 << DAPPIXMASK_BITS["UNRELIABLE"]


def _hexagon_fraction(ifu_size: int) -> float:
    """Area of the bundle's hexagon over the area of the square map."""
    diameter = FOOTPRINT_DIAMETER_ARCSEC[ifu_size]
    side = MAP_SIZE_PIXELS[ifu_size] * 0.5
    return 3 * np.sqrt(3) / 8 * diameter**2 / side**2


def test_nocov_outside_the_footprint(lean_dr17):
    truth = read_truth(lean_dr17)
    for plateifu in healthy_plateifus(lean_dr17):
        _, flux, ivar, mask = read_lines(lean_dr17.maps_paths[plateifu])
        nocov = (mask & NOCOV) > 0
        # One footprint for every line, a hexagon of the bundle's size centred on the map.
        assert (nocov == nocov[0]).all()
        size = nocov.shape[-1]
        assert not nocov[0, size // 2, size // 2]
        assert nocov[0, 0, 0] and nocov[0, -1, -1] and nocov[0, 0, -1] and nocov[0, -1, 0]
        covered = 1 - nocov[0].mean()
        assert abs(covered - _hexagon_fraction(int(truth.loc[plateifu, "ifu_size"]))) < 0.04
        assert ((mask[nocov] & DONOTUSE) > 0).all()
        assert (ivar[nocov] == 0).all() and (flux[nocov] == 0).all()


def test_donotuse_wherever_ivar_is_zero(lean_dr17):
    failed_fits = 0
    for plateifu in healthy_plateifus(lean_dr17):
        _, flux, ivar, mask = read_lines(lean_dr17.maps_paths[plateifu])
        no_ivar = ivar == 0
        assert ((mask[no_ivar] & DONOTUSE) > 0).all(), plateifu
        assert (flux[no_ivar] == 0).all(), plateifu
        # Conversely a value the DAP measured is never DONOTUSE.
        assert ((mask[~no_ivar] & DONOTUSE) == 0).all(), plateifu
        inside = no_ivar & ((mask & NOCOV) == 0)
        failed_fits += int(((mask[inside] & MATHERROR) > 0).sum())
    assert failed_fits > 0  # some fits fail inside the footprint, flagged MATHERROR


def test_a_few_percent_of_values_are_unreliable(lean_dr17):
    flagged = measured = 0
    for plateifu in healthy_plateifus(lean_dr17):
        _, _, ivar, mask = read_lines(lean_dr17.maps_paths[plateifu])
        good = ivar > 0
        measured += int(good.sum())
        flagged += int(((mask[good] & UNRELIABLE) > 0).sum())
    assert 0.005 < flagged / measured < 0.05


def test_other_mask_extensions_share_the_footprint(full_dr17):
    with fits.open(full_dr17.maps_paths[healthy_plateifus(full_dr17)[0]]) as hdus:
        footprint_nocov = (hdus["EMLINE_GFLUX_MASK"].data[0] & NOCOV) > 0
        for hdu in hdus:
            if hdu.name.endswith("_MASK"):
                planes = hdu.data if hdu.data.ndim == 3 else hdu.data[None]
                for plane in planes:
                    assert (((plane & NOCOV) > 0) == footprint_nocov).all(), hdu.name
