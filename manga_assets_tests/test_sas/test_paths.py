import pytest

from manga_assets.sas.paths import PlateIFU, dapall_location, drpall_location, maps_location
from manga_assets.sas.releases import get_release


def test_sas_paths_follow_the_sdss_access_templates():
    dr17, dr15 = get_release("DR17"), get_release("DR15")
    assert maps_location(dr17, PlateIFU(8485, 1901)) == (
        "dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/8485/1901/"
        "manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz"
    )
    assert (
        dapall_location(dr15) == "dr15/manga/spectro/analysis/v2_4_3/2.2.1/dapall-v2_4_3-2.2.1.fits"
    )


def test_switching_releases_in_one_process_gives_each_its_own_tree():
    """sdss-access keeps release variables in os.environ; building a DR15 path must not leak."""
    dr17, dr15 = get_release("DR17"), get_release("DR15")
    assert drpall_location(dr15) == "dr15/manga/spectro/redux/v2_4_3/drpall-v2_4_3.fits"
    assert drpall_location(dr17) == "dr17/manga/spectro/redux/v3_1_1/drpall-v3_1_1.fits"
    assert drpall_location(dr15).startswith("dr15/")


@pytest.mark.parametrize("text", ["../../x", "8485-1901/../..", "8485", "8485-19o1", "-1901", ""])
def test_plate_ifu_strings_that_could_reach_a_path_are_refused(text):
    with pytest.raises(ValueError, match="is not a MaNGA plate-IFU"):
        PlateIFU.parse(text)
