import gzip

import numpy as np
import pytest

from manga_assets.dap.datamodel import DAPPIXMASK_BITS, PROJECT_LINES
from manga_assets.dap.errors import (
    DapWarning,
    MapsFileError,
    MapsShapeError,
    MissingChannelError,
    MissingExtensionError,
    ReleaseMismatchError,
)
from manga_assets.dap.maps import read_maps, read_versdap
from manga_assets_tests.fits_builders import line_values, write_maps


@pytest.mark.parametrize("dapver", ["3.1.0", "2.2.1"])
def test_channels_are_picked_by_name_in_both_layouts(tmp_path, dapver):
    path = write_maps(tmp_path / "maps.fits.gz", dapver=dapver)
    expected = line_values(dapver, (12, 12))

    maps = read_maps(path)

    assert maps.lines == PROJECT_LINES
    for index, line in enumerate(PROJECT_LINES):
        np.testing.assert_array_equal(maps.flux[index], expected[line])
    assert maps.plateifu == "8485-1901"
    assert maps.redshift == pytest.approx(0.0407)
    assert not maps.invalid.any()


def test_dr15_and_dr17_files_give_the_same_maps_for_the_same_lines(tmp_path):
    shared = line_values("3.1.0", (12, 12))
    dr15_values = {line: shared.get(line, np.zeros((12, 12), np.float32)) for line in
                   line_values("2.2.1", (12, 12))}  # fmt: skip
    dr17 = read_maps(write_maps(tmp_path / "a.fits.gz", dapver="3.1.0"))
    dr15 = read_maps(write_maps(tmp_path / "b.fits.gz", dapver="2.2.1", values=dr15_values))
    np.testing.assert_array_equal(dr17.flux, dr15.flux)


def test_configured_mask_bits_ivar_zero_make_values_invalid(tmp_path):
    n_channels = 35
    mask = np.zeros((n_channels, 12, 12), np.int32)
    mask[:, 0, 0] = 1 << DAPPIXMASK_BITS["NOCOV"]
    mask[:, 0, 1] = 1 << DAPPIXMASK_BITS["UNRELIABLE"]
    mask[:, 0, 2] = 1 << DAPPIXMASK_BITS["DONOTUSE"]
    mask[:, 0, 3] = 1 << DAPPIXMASK_BITS["LOWCOV"]
    path = write_maps(tmp_path / "maps.fits.gz", mask=mask)

    default = read_maps(path)
    assert default.invalid[:, 0, :3].all()
    assert not default.invalid[:, 0, 3].any(), "LOWCOV is not invalid by default"
    assert (default.flux[default.invalid] == 0).all() and (default.ivar[default.invalid] == 0).all()

    strict = read_maps(path, invalid_bits=("NOCOV", "LOWCOV"))
    assert strict.invalid[:, 0, 3].all() and not strict.invalid[:, 0, 1].any()

    no_ivar = read_maps(write_maps(tmp_path / "zero.fits.gz", ivar=0.0))
    assert no_ivar.invalid.all()


def test_nan_and_inf_fluxes_become_invalid_with_a_warning(tmp_path):
    values = line_values("3.1.0", (12, 12))
    values["Ha-6564"][3, 3] = np.nan
    values["Hb-4862"][4, 4] = np.inf
    path = write_maps(tmp_path / "maps.fits.gz", values=values)

    with pytest.warns(DapWarning, match="2 non-finite flux or IVAR values"):
        maps = read_maps(path)

    assert maps.n_nonfinite == 2
    assert maps.invalid[PROJECT_LINES.index("Ha-6564"), 3, 3]
    assert np.isfinite(maps.flux).all()


def test_unknown_mask_bit_is_refused(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz")
    with pytest.raises(ValueError, match="'NOSUCHBIT' is not a MANGA_DAPPIXMASK bit"):
        read_maps(path, invalid_bits=("NOSUCHBIT",))


def test_missing_extension_names_the_file_and_extension(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz", drop_extension="EMLINE_GFLUX")
    with pytest.raises(
        MissingExtensionError, match=r"maps.fits.gz: no extension named EMLINE_GFLUX;"
    ):
        read_maps(path)


def test_missing_channel_names_the_line(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz", drop_channel="HeII-4687")
    with pytest.raises(MissingChannelError, match="has no channel 'HeII-4687'"):
        read_maps(path)


def test_truncated_gzip_is_a_file_error(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz", filler_before=6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MapsFileError, match="truncated"):
        read_maps(path)


def test_non_fits_content_is_a_file_error(tmp_path):
    path = tmp_path / "maps.fits.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(b"<html>not found</html>" * 200)
    with pytest.raises(MapsFileError, match="not a FITS file|truncated"):
        read_maps(path)
    with pytest.raises(MapsFileError, match="no such file"):
        read_maps(tmp_path / "absent.fits.gz")


def test_extensions_of_different_shapes_are_refused(tmp_path):
    from astropy.io import fits

    path = write_maps(tmp_path / "maps.fits", compress=False)
    with fits.open(path, mode="update") as hdul:
        hdul["EMLINE_GFLUX_IVAR"].data = hdul["EMLINE_GFLUX_IVAR"].data[:, :10, :10].copy()
    with pytest.raises(MapsShapeError, match="differ in shape"):
        read_maps(path)


def test_reading_stops_after_the_needed_extensions(tmp_path):
    path = write_maps(tmp_path / "maps.fits", compress=False)
    from astropy.io import fits

    with fits.open(path) as hdul:
        end_of_mask = hdul.fileinfo(hdul.index_of("EMLINE_GFLUX_MASK") + 1)["hdrLoc"]
    path.write_bytes(path.read_bytes()[:end_of_mask])  # cut off everything after the mask

    assert read_maps(path).flux.shape == (19, 12, 12)


@pytest.mark.parametrize(("written", "expected"), [("2.2.1", "3.1.0"), ("3.1.0", "2.2.1")])
def test_a_file_of_the_other_release_is_refused_when_a_release_is_expected(
    tmp_path, written, expected
):
    path = write_maps(tmp_path / "maps.fits.gz", dapver=written)
    with pytest.raises(ReleaseMismatchError, match=f"made by DAP {written}, but the configured"):
        read_maps(path, expected_dapver=expected)


def test_a_release_layout_file_of_another_dap_version_is_read_with_a_warning(tmp_path):
    # Files of one release can carry patch or development versions of the DAP (the real DR15
    # file says 2.2.3dev); the layout is what the reader relies on.
    path = write_maps(
        tmp_path / "maps.fits.gz", dapver="2.2.1", versdap="2.2.3dev", filler_before=6
    )

    with pytest.warns(
        DapWarning, match=r"maps.fits.gz: VERSDAP is 2.2.3dev, not the release's 2.2.1"
    ):
        maps = read_maps(path, expected_dapver="2.2.1", expected_daptype="HYB10-GAU-MILESHC")

    assert maps.dapver == "2.2.3dev"
    expected = line_values("2.2.1", (12, 12))
    np.testing.assert_array_equal(maps.flux[PROJECT_LINES.index("Ha-6564")], expected["Ha-6564"])


def test_a_file_of_the_release_version_is_read_without_a_warning(tmp_path, recwarn):
    read_maps(write_maps(tmp_path / "maps.fits.gz", dapver="2.2.1"), expected_dapver="2.2.1")
    assert not [w for w in recwarn if issubclass(w.category, DapWarning)]


def test_a_dr17_layout_is_refused_in_a_dr15_tree_whatever_its_versdap(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz", dapver="3.1.0", versdap="2.2.3dev")
    with pytest.raises(
        ReleaseMismatchError,
        match=r"made by DAP 2.2.3dev, but the configured release uses DAP 2.2.1; the file has 35 "
        r"EMLINE_GFLUX channels where DAP 2.2.1 writes 22 \(not in its list: H12-3751, H11-3771, "
        r"HeI-3889, NI-5199, NI-5201, HeI-7067, ... \(13 in all\); absent: none\)\. "
        r"Point MANGA_RELEASE at the file's release",
    ):
        read_maps(path, expected_dapver="2.2.1")


def test_an_extension_the_release_does_not_write_is_refused(tmp_path):
    from astropy.io import fits

    path = write_maps(tmp_path / "maps.fits", dapver="2.2.1", compress=False)
    with fits.open(path, mode="update") as hdul:
        hdul[1].name = "EMLINE_SEW_CNT"  # DR17 only
    with pytest.raises(
        ReleaseMismatchError,
        match=r"DAP 2.2.1; the file has extensions DAP 2.2.1 does not write \(EMLINE_SEW_CNT\)",
    ):
        read_maps(path, expected_dapver="2.2.1")


def test_versdap_is_read_from_the_primary_header_alone(tmp_path):
    path = write_maps(tmp_path / "maps.fits.gz", dapver="2.2.1", versdap="2.2.3dev")
    assert read_versdap(path) == "2.2.3dev"
    path.write_bytes(b"<html>not found</html>")
    assert read_versdap(path) == ""
