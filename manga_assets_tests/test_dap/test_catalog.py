import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from manga_assets.dap.catalog import CATALOG_COLUMNS, read_dapall, read_drpall, select_cubes
from manga_assets.dap.errors import CatalogueError

CRITICAL = 1 << 30
ROWS = [
    # plateifu, mangaid, ifudesignsize, drp3qual, dapdone, dapqual
    ("8485-1901", "1-1", 19, 0, True, 0),
    ("8485-12701", "1-2", 127, 0, True, 0),
    ("9000-3701", "1-2", 37, 0, True, 0),  # repeat of 1-2 with a smaller IFU
    ("9000-1902", "1-3", 19, CRITICAL, True, 0),
    ("9000-1903", "1-4", 19, 0, False, 0),
    ("9000-6101", "1-5", 61, 0, True, CRITICAL),
    ("../../x", "1-6", 19, 0, True, 0),
]


def write_catalogues(tmp_path, *, drop_column=None, dr15=False):
    drpall = Table(
        {
            "plateifu": [r[0] for r in ROWS],
            "mangaid": [r[1] for r in ROWS],
            "plate": [int(r[0].split("-")[0]) if r[0][0].isdigit() else 0 for r in ROWS],
            "ifudsgn": [r[0].split("-")[-1] for r in ROWS],
            "objra": np.linspace(10, 11, len(ROWS)),
            "objdec": np.zeros(len(ROWS)),
            "z": np.full(len(ROWS), 0.03),
            "ebvgal": np.full(len(ROWS), 0.01),
            "drp3qual": [r[3] for r in ROWS],
            "mngtarg1": np.zeros(len(ROWS), int),
            "mngtarg3": np.zeros(len(ROWS), int),
            "ifudesignsize": [r[2] for r in ROWS],
        }
    )
    if drop_column:
        drpall.remove_column(drop_column)
    dap = Table(
        {
            "PLATEIFU": [r[0] for r in ROWS],
            "DAPTYPE": ["HYB10-MILESHC-MASTARSSP"] * len(ROWS),
            "DAPDONE": [r[4] for r in ROWS],
            "DAPQUAL": [r[5] for r in ROWS],
        }
    )
    drp_path, dap_path = tmp_path / "drpall.fits", tmp_path / "dapall.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(drpall)]).writeto(drp_path)
    with fits.open(drp_path, mode="update") as hdul:
        hdul[1].name = "MANGA"
    dap_hdu = fits.table_to_hdu(dap)
    dap_hdu.name = "DAPALL" if dr15 else "HYB10-MILESHC-MASTARSSP"
    fits.HDUList([fits.PrimaryHDU(), dap_hdu]).writeto(dap_path)
    return drp_path, dap_path


def test_selection_keeps_done_uncritical_unique_cubes(tmp_path):
    drp_path, dap_path = write_catalogues(tmp_path)
    selection = select_cubes(
        read_drpall(drp_path),
        read_dapall(dap_path, "HYB10-MILESHC-MASTARSSP", per_daptype_extensions=True),
    )

    assert selection.selected["plateifu"].tolist() == ["8485-1901", "8485-12701"]
    assert list(selection.selected.columns) == list(CATALOG_COLUMNS)
    reasons = dict(zip(selection.rejected["plateifu"], selection.rejected["reason"], strict=True))
    assert reasons["9000-3701"] == "repeat observation of MaNGA-ID 1-2 (kept 8485-12701)"
    assert reasons["9000-1902"] == "DRP3QUAL has the CRITICAL bit"
    assert reasons["9000-1903"] == "DAP not done (DAPDONE false)"
    assert reasons["9000-6101"] == "DAPQUAL has the CRITICAL bit"
    assert reasons["../../x"] == "invalid plate-IFU designation"


def test_dr15_dapall_has_one_extension_with_a_daptype_column(tmp_path):
    _, dap_path = write_catalogues(tmp_path, dr15=True)
    dapall = read_dapall(dap_path, "HYB10-MILESHC-MASTARSSP", per_daptype_extensions=False)
    assert len(dapall) == len(ROWS)
    with pytest.raises(CatalogueError, match="no extension 'HYB10-MILESHC-MASTARSSP'"):
        read_dapall(dap_path, "HYB10-MILESHC-MASTARSSP", per_daptype_extensions=True)


def test_a_catalogue_missing_a_column_is_refused_by_name(tmp_path):
    drp_path, _ = write_catalogues(tmp_path, drop_column="drp3qual")
    with pytest.raises(CatalogueError, match=r"\[MANGA\]: missing column\(s\) drp3qual"):
        read_drpall(drp_path)
