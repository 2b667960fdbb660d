"""Selecting the cubes to analyse from the DRPall and DAPall catalogues.

A cube is selected when the DAP analysed it with the chosen DAPTYPE (DAPDONE), neither the DRP nor
the DAP flagged it CRITICAL, its plate-IFU is a valid designation, and it is the preferred cube of
its MaNGA-ID (galaxies observed more than once keep one cube: the largest IFU, then the lowest
plate-IFU, so the choice is stable).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class CatalogueSelection:
    """The selected cubes and, for every cube left out, why."""

    selected: pd.DataFrame
    rejected: pd.DataFrame


def _table(path: Path, extname: str, columns: tuple[str, ...], optional: tuple[str, ...]):
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [hdu.name for hdu in hdul]
            if extname.upper() not in names:
                raise CatalogueError(
                    f"{path}: no extension {extname!r} (extensions: {', '.join(names)}). "
                    "Is this the catalogue of the configured release and DAPTYPE?"
                )
            data = hdul[extname].data
            present = {name.lower(): name for name in data.columns.names}
            missing = [c for c in columns if c.lower() not in present]
            if missing:
                raise CatalogueError(
                    f"{path} [{extname}]: missing column(s) {', '.join(missing)}; "
                    "the catalogue does not follow the MaNGA data model."
                )
            wanted = [c for c in (*columns, *optional) if c.lower() in present]
            frame = pd.DataFrame({c: _native(data[present[c.lower()]]) for c in wanted})
    except OSError as error:
        raise CatalogueError(f"{path}: cannot read the catalogue ({error})") from error
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str).str.strip()
    return frame


def _native(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column)
    if column.dtype.kind in "SU":
        return column.astype(str)
    return column.astype(column.dtype.newbyteorder("="))


def read_drpall(path: Path) -> pd.DataFrame:
    """The MANGA extension of a DRPall file, with the columns the pipeline uses (lower case)."""
    return _table(Path(path), "MANGA", DRPALL_COLUMNS, DRPALL_OPTIONAL_COLUMNS)


def read_dapall(path: Path, daptype: str, *, per_daptype_extensions: bool) -> pd.DataFrame:
    """The DAPall rows of one DAPTYPE.

    DR17 (DAP 3.x) writes one extension per DAPTYPE; DR15 (DAP 2.2.1) one extension ``DAPALL``
    with a DAPTYPE column. ``per_daptype_extensions`` says which layout to expect.
    """
    extname = daptype if per_daptype_extensions else "DAPALL"
    frame = _table(Path(path), extname, DAPALL_COLUMNS, DAPALL_OPTIONAL_COLUMNS)
    return frame[frame["DAPTYPE"] == daptype].reset_index(drop=True)


def _is_critical(bits: pd.Series) -> pd.Series:
    return (bits.astype(np.int64) & (1 << CRITICAL_BIT)) != 0


def select_cubes(drpall: pd.DataFrame, dapall: pd.DataFrame) -> CatalogueSelection:
    """Join DRPall and DAPall rows and keep the cubes worth analysing (see module docstring)."""
    dap = dapall.rename(columns={"PLATEIFU": "plateifu", "DAPTYPE": "daptype"})
    dap = dap.rename(columns={"DAPDONE": "dapdone", "DAPQUAL": "dapqual"})
    merged = drpall.merge(dap[["plateifu", "daptype", "dapdone", "dapqual"]], "left", "plateifu")

    reasons = pd.Series("", index=merged.index, dtype=object)

    def reject(condition: pd.Series, reason: str) -> None:
        reasons[condition & (reasons == "")] = reason

    valid_id = merged["plateifu"].map(_valid_plateifu)
    reject(~valid_id, "invalid plate-IFU designation")
    reject(merged["daptype"].isna(), "not in the DAPall for this DAPTYPE")
    reject(~merged["dapdone"].fillna(False).astype(bool), "DAP not done (DAPDONE false)")
    reject(_is_critical(merged["drp3qual"]), "DRP3QUAL has the CRITICAL bit")
    reject(_is_critical(merged["dapqual"].fillna(0)), "DAPQUAL has the CRITICAL bit")

    candidates = merged[reasons == ""].sort_values(
        ["mangaid", "ifudesignsize", "plateifu"], ascending=[True, False, True]
    )
    duplicate = candidates.duplicated("mangaid", keep="first")
    kept_by_mangaid = candidates[~duplicate].set_index("mangaid")["plateifu"]
    for index in candidates.index[duplicate]:
        kept = kept_by_mangaid[merged.at[index, "mangaid"]]
        reasons[index] = (
            f"repeat observation of MaNGA-ID {merged.at[index, 'mangaid']} (kept {kept})"
        )

    selected = merged[reasons == ""].copy()
    selected["ifudesign"] = selected["ifudsgn"].astype(int)
    selected["plate"] = selected["plate"].astype(int)
    selected["dapqual"] = selected["dapqual"].astype(np.int64)
    for column in DRPALL_OPTIONAL_COLUMNS:
        if column not in selected:
            selected[column] = np.nan
    selected = selected[list(CATALOG_COLUMNS)].sort_values("plateifu", key=_plateifu_order)
    rejected = pd.DataFrame({"plateifu": merged["plateifu"], "reason": reasons})
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
