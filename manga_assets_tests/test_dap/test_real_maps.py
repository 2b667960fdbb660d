"""The reader on a MAPS file written by the DAP itself (DR15 layout, VERSDAP 2.2.3dev)."""

import numpy as np
import pytest
from astropy.io import fits

from manga_assets.dap.datamodel import DEFAULT_INVALID_BITS, PROJECT_LINES, mask_value
from manga_assets.dap.errors import DapWarning, ReleaseMismatchError
from manga_assets.dap.maps import channel_indices, read_maps, read_versdap
from manga_assets.sas.releases import get_release
from manga_assets_tests.real_data import REAL_MAPS, requires_real_maps

pytestmark = requires_real_maps
DR15 = get_release("DR15")


@pytest.fixture(scope="module")
def maps():
    with pytest.warns(DapWarning, match="VERSDAP is 2.2.3dev, not the release's 2.2.1"):
        return read_maps(REAL_MAPS, expected_dapver=DR15.dapver, expected_daptype=DR15.daptype)


@pytest.fixture(scope="module")
def astropy_maps():
    """The three extensions as astropy reads them, each line picked by its channel name."""
    with fits.open(REAL_MAPS) as hdul:
        primary = hdul[0].header.copy()
        arrays = {}
        for extname in ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"):
            channels = channel_indices(hdul[extname].header)
            data = hdul[extname].data
            arrays[extname] = np.stack([data[channels[line]] for line in PROJECT_LINES])
    return primary, arrays


def test_every_line_equals_astropys_values_by_channel_name(maps, astropy_maps):
    _, arrays = astropy_maps
    flux, ivar = arrays["EMLINE_GFLUX"], arrays["EMLINE_GFLUX_IVAR"]
    assert maps.lines == PROJECT_LINES and maps.flux.shape == (19, 42, 42)
    valid = ~maps.invalid
    np.testing.assert_array_equal(maps.flux[valid], flux[valid])
    np.testing.assert_array_equal(maps.ivar[valid], ivar[valid])
    assert (maps.flux[maps.invalid] == 0).all() and (maps.ivar[maps.invalid] == 0).all()
    # H-alpha, from the README's own astropy count: 769 valid spaxels, peak 88.4.
    ha = PROJECT_LINES.index("Ha-6564")
    assert int(valid[ha].sum()) == 769
    assert maps.flux[ha].max() == pytest.approx(88.4, abs=0.05)


def test_mask_bits_are_as_stored_and_decide_validity(maps, astropy_maps):
    _, arrays = astropy_maps
    stored = arrays["EMLINE_GFLUX_MASK"]
    np.testing.assert_array_equal(maps.mask_bits, stored)
    assert {0, 1073741826} <= set(np.unique(stored).tolist())  # DONOTUSE | LOWCOV is stored
    expected = ((stored & mask_value(DEFAULT_INVALID_BITS)) != 0) | (
        arrays["EMLINE_GFLUX_IVAR"] <= 0
    )
    np.testing.assert_array_equal(maps.invalid, expected)


def test_header_values_and_redshift_from_scinpvel(maps, astropy_maps):
    primary, _ = astropy_maps
    assert (maps.plateifu, maps.mangaid, maps.daptype) == ("7815-3702", "1-113540", DR15.daptype)
    assert maps.dapver == read_versdap(REAL_MAPS) == "2.2.3dev"
    assert maps.redshift == pytest.approx(primary["SCINPVEL"] / 299792.458, rel=1e-12)
    assert maps.redshift == pytest.approx(0.02938, abs=1e-5)
    assert maps.ebvgal == pytest.approx(0.101375)


def test_the_dr15_file_is_refused_in_a_dr17_tree():
    dr17 = get_release("DR17")
    with pytest.raises(
        ReleaseMismatchError,
        match=r"made by DAP 2.2.3dev, but the configured release uses DAP 3.1.0; the file has "
        r"extensions DAP 3.1.0 does not write \(STELLAR_CONT_FRESID, STELLAR_CONT_RCHI2\)",
    ):
        read_maps(REAL_MAPS, expected_dapver=dr17.dapver)
