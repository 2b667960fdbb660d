"""Selecting the cubes to analyse from the DRPall and DAPall catalogues.

A cube is selected when the DAP analysed it with the chosen DAPTYPE (DAPDONE), neither the DRP nor
the DAP flagged it CRITICAL, its plate-IFU is a valid designation, and it is the preferred cube of
its MaNGA-ID (galaxies observed more than once keep one cube: the largest IFU, then the lowest
plate-IFU, so the choice is stable).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from manga_assets.dap.datamodel import CRITICAL_BIT
from manga_assets.dap.errors import CatalogueError
from manga_assets.sas.paths import PlateIFU

DRPALL_COLUMNS = (
    "plateifu", "mangaid", "plate", "ifudsgn", "objra", "objdec", "z", "ebvgal", "drp3qual",
    "mngtarg1", "mngtarg3", "ifudesignsize",
)  # fmt: skip
DRPALL_OPTIONAL_COLUMNS = (
    "nsa_z", "nsa_elpetro_th50_r", "nsa_elpetro_ba", "nsa_elpetro_phi", "nsa_elpetro_mass",
    "nsa_sersic_n",
)  # fmt: skip
DAPALL_COLUMNS = ("PLATEIFU", "DAPTYPE", "DAPDONE", "DAPQUAL")
DAPALL_OPTIONAL_COLUMNS = ("VERSDAP", "VERSDRP3")

# Columns of the selected catalogue, in order (catalog.parquet).
CATALOG_COLUMNS = (
    "plateifu", "plate", "ifudesign", "mangaid", "objra", "objdec", "z", "ebvgal",
    "ifudesignsize", "drp3qual", "dapqual", "mngtarg1", "mngtarg3", "daptype",
    *DRPALL_OPTIONAL_COLUMNS,
)  # fmt: skip


class Rejection(Enum):
    """Why a cube is left out of the selection: the code (its name, lower case) and its message.

    Checked in this order; a cube gets the first that applies. A repeat observation's message
    also names the MaNGA-ID and the cube kept (:func:`repeat_message`).
    """

    INVALID_ID = "invalid plate-IFU designation"
    NOT_IN_DAPALL = "not in the DAPall for this DAPTYPE"
    DAP_NOT_DONE = "DAP not done (DAPDONE false)"
    DRP_CRITICAL = "DRP3QUAL has the CRITICAL bit"
    DAP_CRITICAL = "DAPQUAL has the CRITICAL bit"
    REPEAT_OBSERVATION = "repeat observation"

    @property
    def code(self) -> str:
        return self.name.lower()


def repeat_message(mangaid: str, kept: str) -> str:
    """The message of a repeat observation: which galaxy, and which of its cubes was kept."""
    return f"{Rejection.REPEAT_OBSERVATION.value} of MaNGA-ID {mangaid} (kept {kept})"


@dataclass(frozen=True)
class CatalogueSelection:
    """The selected cubes and, for every cube left out, why.

    ``rejected`` has a row per cube left out: ``plateifu``, ``code`` (a `Rejection` code, to
    count by) and ``reason`` (its message, for people).
    """

    selected: pd.DataFrame
    rejected: pd.DataFrame

    def rejected_by_code(self) -> dict[str, int]:
        """How many cubes each reason left out, by `Rejection` code."""
        return {str(code): int(n) for code, n in self.rejected["code"].value_counts().items()}


def _describe(hdul: fits.HDUList) -> str:
    """What a FITS file holds, for error messages: 'HDU 0 PRIMARY, HDU 1 (unnamed, 12 rows)'."""
    parts = []
    for index, hdu in enumerate(hdul):
        name = hdu.name or "(unnamed)"
        if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
            name += f" table, {len(hdu.data) if hdu.data is not None else 0} rows"
        parts.append(f"HDU {index} {name}")
    return ", ".join(parts)


def _columns(hdu) -> dict[str, str]:
    """Lower-case column name -> the name as written, for a table HDU (empty for an image)."""
    if not isinstance(hdu, fits.BinTableHDU | fits.TableHDU) or hdu.columns is None:
        return {}
    return {name.lower(): name for name in hdu.columns.names}


def _missing(hdu, columns: tuple[str, ...]) -> list[str]:
    present = _columns(hdu)
    return [c for c in columns if c.lower() not in present]


def _frame(hdu, columns: tuple[str, ...], optional: tuple[str, ...]) -> pd.DataFrame:
    """The wanted columns of a table, named as in ``columns`` whatever their case in the file."""
    present = _columns(hdu)
    wanted = [c for c in (*columns, *optional) if c.lower() in present]
    frame = pd.DataFrame({c: _native(hdu.data[present[c.lower()]]) for c in wanted})
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str).str.strip()
    return frame


def _open(path: Path) -> fits.HDUList:
    try:
        return fits.open(path, memmap=False)
    except (OSError, ValueError) as error:
        raise CatalogueError(
            f"{path}: cannot read the catalogue ({error}). Delete it and let the next run fetch it."
        ) from error


def _native(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column)
    if column.dtype.kind in "SU":
        return column.astype(str)
    return column.astype(column.dtype.newbyteorder("="))


def read_drpall(path: Path) -> pd.DataFrame:
    """The MaNGA table of a DRPall file, with the columns the pipeline uses (lower case).

    DR17 names its tables 'MANGA' (HDU 1) and 'MASTAR' (HDU 2). Earlier DRPall files, such as
    DR15's ``drpall-v2_4_3.fits``, hold one table in HDU 1 that the DAP reads by position. The
    table is therefore 'MANGA' when the file has one, otherwise HDU 1, and it must have the
    columns the pipeline uses (in upper or lower case).

    Raises
    ------
    CatalogueError
        The file cannot be read, or neither layout fits; the message lists what the file holds.
    """
    path = Path(path)
    with _open(path) as hdul:
        names = [hdu.name for hdu in hdul]
        if "MANGA" in names:
            hdu, where = hdul["MANGA"], "[MANGA]"
        elif len(hdul) > 1:
            hdu, where = hdul[1], "[HDU 1]"
        else:
            raise CatalogueError(
                f"{path}: no 'MANGA' table and no HDU 1 (the file has {_describe(hdul)}). "
                "A DRPall holds its MaNGA cubes in an extension 'MANGA' (DR17) or in HDU 1 (DR15); "
                "is this the DRPall of the configured release?"
            )
        if not _columns(hdu):
            raise CatalogueError(
                f"{path} {where}: not a table (the file has {_describe(hdul)}). "
                "Is this the DRPall of the configured release?"
            )
        missing = _missing(hdu, DRPALL_COLUMNS)
        if missing:
            raise CatalogueError(
                f"{path} {where}: missing column(s) {', '.join(missing)}; the catalogue does not "
                f"follow the MaNGA data model (the file has {_describe(hdul)})."
            )
        return _frame(hdu, DRPALL_COLUMNS, DRPALL_OPTIONAL_COLUMNS)


def read_dapall(path: Path, daptype: str) -> pd.DataFrame:
    """The DAPall rows of one DAPTYPE.

    DR17 (DAP 3.x) writes one table extension per DAPTYPE, named after it. DR15 (DAP 2.2.1) writes
    one table, 'DAPALL', with a DAPTYPE column and a row per cube and DAPTYPE. The layout is read
    from the file: an extension named ``daptype`` when there is one, otherwise the 'DAPALL' table.

    Raises
    ------
    CatalogueError
        The file cannot be read, neither layout fits, a column is missing, or the DAPALL table
        has no row of ``daptype``; the message lists what the file holds.
    """
    path = Path(path)
    with _open(path) as hdul:
        names = [hdu.name for hdu in hdul]
        if daptype.upper() in names:
            hdu, where = hdul[daptype], f"[{daptype}]"
        elif "DAPALL" in names:
            hdu, where = hdul["DAPALL"], "[DAPALL]"
        else:
            raise CatalogueError(
                f"{path}: no extension {daptype!r} (DR17 layout) and no 'DAPALL' table (DR15 "
                f"layout); the file has {_describe(hdul)}. Is this the DAPall of the configured "
                "release, and is the DAPTYPE one it analysed?"
            )
        missing = _missing(hdu, DAPALL_COLUMNS)
        if missing:
            raise CatalogueError(
                f"{path} {where}: missing column(s) {', '.join(missing)}; the catalogue does not "
                f"follow the MaNGA data model (the file has {_describe(hdul)})."
            )
        frame = _frame(hdu, DAPALL_COLUMNS, DAPALL_OPTIONAL_COLUMNS)
    rows = frame[frame["DAPTYPE"] == daptype].reset_index(drop=True)
    if rows.empty and len(frame):
        found = ", ".join(sorted(frame["DAPTYPE"].unique()))
        raise CatalogueError(
            f"{path} {where}: no row of DAPTYPE {daptype!r} (DAPTYPEs present: {found}). "
            "Is this the DAPall of the configured release?"
        )
    return rows


def _is_critical(bits: pd.Series) -> pd.Series:
    return (bits.astype(np.int64) & (1 << CRITICAL_BIT)) != 0


def select_cubes(drpall: pd.DataFrame, dapall: pd.DataFrame) -> CatalogueSelection:
    """Join DRPall and DAPall rows and keep the cubes worth analysing (see module docstring)."""
    dap = dapall.rename(columns={"PLATEIFU": "plateifu", "DAPTYPE": "daptype"})
    dap = dap.rename(columns={"DAPDONE": "dapdone", "DAPQUAL": "dapqual"})
    merged = drpall.merge(dap[["plateifu", "daptype", "dapdone", "dapqual"]], "left", "plateifu")

    reasons = pd.Series("", index=merged.index, dtype=object)
    codes = pd.Series("", index=merged.index, dtype=object)

    def reject(condition: pd.Series, rejection: Rejection) -> None:
        first = condition & (reasons == "")
        reasons[first] = rejection.value
        codes[first] = rejection.code

    valid_id = merged["plateifu"].map(_valid_plateifu)
    reject(~valid_id, Rejection.INVALID_ID)
    reject(merged["daptype"].isna(), Rejection.NOT_IN_DAPALL)
    reject(~merged["dapdone"].fillna(False).astype(bool), Rejection.DAP_NOT_DONE)
    reject(_is_critical(merged["drp3qual"]), Rejection.DRP_CRITICAL)
    reject(_is_critical(merged["dapqual"].fillna(0)), Rejection.DAP_CRITICAL)

    candidates = merged[reasons == ""].sort_values(
        ["mangaid", "ifudesignsize", "plateifu"], ascending=[True, False, True]
    )
    duplicate = candidates.duplicated("mangaid", keep="first")
    kept_by_mangaid = candidates[~duplicate].set_index("mangaid")["plateifu"]
    for index in candidates.index[duplicate]:
        kept = kept_by_mangaid[merged.at[index, "mangaid"]]
        reasons[index] = repeat_message(merged.at[index, "mangaid"], kept)
        codes[index] = Rejection.REPEAT_OBSERVATION.code

    selected = merged[reasons == ""].copy()
    selected["ifudesign"] = selected["ifudsgn"].astype(int)
    selected["plate"] = selected["plate"].astype(int)
    selected["dapqual"] = selected["dapqual"].astype(np.int64)
    for column in DRPALL_OPTIONAL_COLUMNS:
        if column not in selected:
            selected[column] = np.nan
    selected = selected[list(CATALOG_COLUMNS)].sort_values("plateifu", key=_plateifu_order)
    rejected = pd.DataFrame({"plateifu": merged["plateifu"], "code": codes, "reason": reasons})
    rejected = rejected[rejected["reason"] != ""].reset_index(drop=True)
    return CatalogueSelection(selected.reset_index(drop=True), rejected)


def _valid_plateifu(text: str) -> bool:
    try:
        PlateIFU.parse(text)
    except ValueError:
        return False
    return True


def _plateifu_order(column: pd.Series) -> pd.Series:
    return column.map(lambda text: tuple(int(part) for part in text.split("-")))
