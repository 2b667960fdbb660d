import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table, vstack

from manga_assets.dap.catalog import (
    CATALOG_COLUMNS,
    Rejection,
    read_dapall,
    read_drpall,
    select_cubes,
)
from manga_assets.dap.errors import CatalogueError

CRITICAL = 1 << 30
DAPTYPE = "HYB10-MILESHC-MASTARSSP"
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
            "DAPTYPE": [DAPTYPE] * len(ROWS),
            "DAPDONE": [r[4] for r in ROWS],
            "DAPQUAL": [r[5] for r in ROWS],
        }
    )
    if dr15:
        # DAP 2.2.1 writes a DAPALL table with a row per cube and DAPTYPE.
        other = dap.copy()
        other["DAPTYPE"] = "VOR10-GAU-MILESHC"
        dap = vstack([dap, other])
    tmp_path.mkdir(parents=True, exist_ok=True)
    drp_path, dap_path = tmp_path / "drpall.fits", tmp_path / "dapall.fits"
    drp_hdu = fits.table_to_hdu(drpall)
    if not dr15:
        # DR17 names the table; DR15's drpall-v2_4_3.fits has it unnamed in HDU 1.
        drp_hdu.name = "MANGA"
    fits.HDUList([fits.PrimaryHDU(), drp_hdu]).writeto(drp_path)
    dap_hdu = fits.table_to_hdu(dap)
    dap_hdu.name = "DAPALL" if dr15 else DAPTYPE
    fits.HDUList([fits.PrimaryHDU(), dap_hdu]).writeto(dap_path)
    return drp_path, dap_path


def test_selection_keeps_done_uncritical_unique_cubes(tmp_path):
    drp_path, dap_path = write_catalogues(tmp_path)
    selection = select_cubes(read_drpall(drp_path), read_dapall(dap_path, DAPTYPE))

    assert selection.selected["plateifu"].tolist() == ["8485-1901", "8485-12701"]
    assert list(selection.selected.columns) == list(CATALOG_COLUMNS)
    reasons = dict(zip(selection.rejected["plateifu"], selection.rejected["reason"], strict=True))
    assert reasons["9000-3701"] == "repeat observation of MaNGA-ID 1-2 (kept 8485-12701)"
    assert reasons["9000-1902"] == "DRP3QUAL has the CRITICAL bit"
    assert reasons["9000-1903"] == "DAP not done (DAPDONE false)"
    assert reasons["9000-6101"] == "DAPQUAL has the CRITICAL bit"
    assert reasons["../../x"] == "invalid plate-IFU designation"
    # Counted by code, not by parsing the messages.
    codes = dict(zip(selection.rejected["plateifu"], selection.rejected["code"], strict=True))
    assert codes["9000-3701"] == Rejection.REPEAT_OBSERVATION.code == "repeat_observation"
    assert selection.rejected_by_code() == {
        "repeat_observation": 1, "drp_critical": 1, "dap_not_done": 1, "dap_critical": 1,
        "invalid_id": 1,
    }  # fmt: skip


def test_dr15_catalogues_as_dap_2_2_1_writes_them_select_the_same_cubes(tmp_path):
    dr17 = select_cubes(*_read(*write_catalogues(tmp_path / "dr17")))
    drp_path, dap_path = write_catalogues(tmp_path / "dr15", dr15=True)
    with fits.open(drp_path) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", ""], "DR15 DRPall: HDU 1, unnamed"

    dapall = read_dapall(dap_path, DAPTYPE)
    dr15 = select_cubes(read_drpall(drp_path), dapall)

    assert len(dapall) == len(ROWS) and set(dapall["DAPTYPE"]) == {DAPTYPE}
    pd.testing.assert_frame_equal(dr15.selected, dr17.selected)
    assert read_dapall(dap_path, "VOR10-GAU-MILESHC")["DAPTYPE"].eq("VOR10-GAU-MILESHC").all()


def _read(drp_path, dap_path):
    return read_drpall(drp_path), read_dapall(dap_path, DAPTYPE)


def test_column_names_may_be_upper_or_lower_case(tmp_path):
    drp_path, dap_path = write_catalogues(tmp_path / "as_written")
    expected = select_cubes(*_read(drp_path, dap_path)).selected
    for path, rename in ((drp_path, str.upper), (dap_path, str.lower)):
        with fits.open(path, mode="update") as hdul:
            table = Table(hdul[1].data)
            table.rename_columns(table.colnames, [rename(name) for name in table.colnames])
            renamed = fits.table_to_hdu(table)
            renamed.name = hdul[1].name
            hdul[1] = renamed

    pd.testing.assert_frame_equal(select_cubes(*_read(drp_path, dap_path)).selected, expected)


def test_a_drpall_of_neither_layout_is_refused_with_what_it_holds(tmp_path):
    image_only = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2)), name="SKY")]).writeto(
        image_only
    )
    with pytest.raises(
        CatalogueError, match=r"\[HDU 1\]: not a table \(the file has HDU 0 PRIMARY, HDU 1 SKY\)"
    ):
        read_drpall(image_only)

    primary_only = tmp_path / "primary.fits"
    fits.PrimaryHDU().writeto(primary_only)
    with pytest.raises(CatalogueError, match="no 'MANGA' table and no HDU 1"):
        read_drpall(primary_only)


def test_a_dapall_of_neither_layout_is_refused_with_what_it_holds(tmp_path):
    _, dap_path = write_catalogues(tmp_path)
    with pytest.raises(
        CatalogueError,
        match=r"no extension 'SPX-MILESHC-MASTARSSP' \(DR17 layout\) and no 'DAPALL' table "
        r"\(DR15 layout\); the file has HDU 0 PRIMARY, HDU 1 HYB10-MILESHC-MASTARSSP table, 7 rows",
    ):
        read_dapall(dap_path, "SPX-MILESHC-MASTARSSP")

    _, dr15_path = write_catalogues(tmp_path / "dr15", dr15=True)
    with pytest.raises(
        CatalogueError,
        match=r"no row of DAPTYPE 'SPX-MILESHC-MASTARSSP' \(DAPTYPEs present: "
        r"HYB10-MILESHC-MASTARSSP, VOR10-GAU-MILESHC\)",
    ):
        read_dapall(dr15_path, "SPX-MILESHC-MASTARSSP")


def test_a_catalogue_missing_a_column_is_refused_by_name(tmp_path):
    drp_path, _ = write_catalogues(tmp_path, drop_column="drp3qual")
    with pytest.raises(CatalogueError, match=r"\[MANGA\]: missing column\(s\) drp3qual"):
        read_drpall(drp_path)
    dr15_path, _ = write_catalogues(tmp_path / "dr15", drop_column="drp3qual", dr15=True)
    with pytest.raises(CatalogueError, match=r"\[HDU 1\]: missing column\(s\) drp3qual"):
        read_drpall(dr15_path)
