"""Extraction of the real DAP MAPS file: tied doublets, flux and peaks survive the grid."""

import numpy as np
import pytest

from manga_assets.cubes.cube_file import read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.dap.datamodel import PROJECT_LINES, TIED_FLUX_RATIOS
from manga_assets.dap.errors import DapWarning
from manga_assets.dap.maps import read_maps
from manga_assets.sas.releases import get_release
from manga_assets_tests.real_data import REAL_MAPS, requires_real_maps

pytestmark = requires_real_maps
DR15 = get_release("DR15")
SETTINGS = ExtractionSettings()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    cube_path = tmp_path_factory.mktemp("real") / "7815-3702.npz"
    with pytest.warns(DapWarning, match="VERSDAP is 2.2.3dev"):
        row = extract_galaxy(
            REAL_MAPS, cube_path, SETTINGS,
            expected_dapver=DR15.dapver, expected_daptype=DR15.daptype,
        )  # fmt: skip
    maps = read_maps(REAL_MAPS, lines=SETTINGS.lines, invalid_bits=SETTINGS.invalid_bits)
    return maps, read_cube(cube_path), row


@pytest.mark.parametrize(("weak", "strong"), [(w, s) for w, (s, _) in
                                              TIED_FLUX_RATIOS["2.2.1"].items()])  # fmt: skip
def test_tied_doublet_ratios_are_kept_in_valid_cells(extracted, weak, strong):
    _, cube, _ = extracted
    ratio = TIED_FLUX_RATIOS["2.2.1"][weak][1]
    w, s = PROJECT_LINES.index(weak), PROJECT_LINES.index(strong)
    both = ~cube.mask[w] & ~cube.mask[s] & (cube.flux[s] > 0)
    assert both.sum() > 400, "most of the galaxy's cells are valid in both lines"
    kept = np.isclose(cube.flux[w][both] / cube.flux[s][both], ratio, rtol=1e-3)
    assert kept.mean() >= 0.99, f"{weak}/{strong} = {ratio} in {kept.mean():.1%} of valid cells"


def test_halpha_flux_is_conserved_within_two_percent(extracted):
    maps, cube, _ = extracted
    ha = PROJECT_LINES.index("Ha-6564")
    # A cell holds the mean flux per DAP spaxel of the area it covers, (42 / 32)^2 spaxels.
    cell_area = (maps.flux.shape[1] / SETTINGS.grid) * (maps.flux.shape[2] / SETTINGS.grid)
    native = maps.flux[ha][~maps.invalid[ha]].sum()
    on_grid = cube.flux[ha][~cube.mask[ha]].sum() * cell_area
    assert on_grid / native == pytest.approx(1.0, abs=0.02)


def test_no_valid_cell_is_brighter_than_the_brightest_valid_spaxel(extracted):
    maps, cube, _ = extracted
    for index, line in enumerate(PROJECT_LINES):
        valid_cells = cube.flux[index][~cube.mask[index]]
        valid_spaxels = maps.flux[index][~maps.invalid[index]]
        if valid_spaxels.size:
            assert valid_cells.max(initial=0) <= valid_spaxels.max() * (1 + 1e-6), line


def test_features_row_records_the_files_dap_version_and_redshift(extracted):
    _, _, row = extracted
    assert row["versdap"] == "2.2.3dev"
    assert row["redshift"] == pytest.approx(8808.5919386934 / 299792.458)
    assert (row["map_ny"], row["map_nx"]) == (42, 42)
