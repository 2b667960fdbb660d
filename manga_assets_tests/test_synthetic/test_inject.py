"""A real MAPS file injected into a synthetic release keeps the release's catalogue layout."""

import pytest
from astropy.io import fits

from manga_assets.dap.catalog import read_dapall, read_drpall, select_cubes
from manga_assets.sas.paths import PlateIFU, maps_location
from manga_assets.sas.releases import get_release
from manga_assets.synthetic.inject import inject_maps
from manga_assets_tests.conftest import build_small_release
from manga_assets_tests.real_data import REAL_MAPS, REAL_PLATEIFU, requires_real_maps

pytestmark = requires_real_maps


def test_the_file_is_copied_unchanged_and_selected_from_dr15_catalogues(tmp_path):
    release = build_small_release(tmp_path, release="DR15", n_plates=1, galaxies_per_plate=3)
    dr15 = get_release("DR15")

    assert inject_maps(tmp_path, "DR15", REAL_MAPS) == PlateIFU.parse(REAL_PLATEIFU)

    served = tmp_path / maps_location(dr15, PlateIFU.parse(REAL_PLATEIFU))
    assert served.read_bytes() == REAL_MAPS.read_bytes()
    with fits.open(release.drpall_path) as drpall, fits.open(release.dapall_path) as dapall:
        assert [hdu.name for hdu in drpall] == ["PRIMARY", ""]
        assert [hdu.name for hdu in dapall] == ["PRIMARY", "DAPALL"]
    selected = select_cubes(
        read_drpall(release.drpall_path), read_dapall(release.dapall_path, dr15.daptype)
    ).selected.set_index("plateifu")
    row = selected.loc[REAL_PLATEIFU]
    assert (row["mangaid"], row["ifudesignsize"], row["mngtarg1"]) == ("1-113540", 37, 1216)
    assert row["z"] == pytest.approx(8808.5919386934 / 299792.458)
    dapall = read_dapall(release.dapall_path, dr15.daptype).set_index("PLATEIFU")
    assert dapall.at[REAL_PLATEIFU, "VERSDAP"] == "2.2.3dev"

    with pytest.raises(ValueError, match="already in"):
        inject_maps(tmp_path, "DR15", REAL_MAPS)


def test_a_file_of_another_daptype_is_refused(tmp_path):
    build_small_release(tmp_path, release="DR17", n_plates=1, galaxies_per_plate=3)
    with pytest.raises(ValueError, match="DAPTYPE HYB10-GAU-MILESHC; the synthetic DR17 release"):
        inject_maps(tmp_path, "DR17", REAL_MAPS)
