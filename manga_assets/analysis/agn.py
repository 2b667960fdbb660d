"""The AGN sample: which galaxies host an active nucleus, and by which evidence.

Three independent sources mark a galaxy as AGN, and a galaxy may carry several:

- ``bpt``: its centre is classified ``seyfert`` or ``liner`` (:func:`~.bpt.classify_centre`);
- ``mngtarg3``: it was targeted by a MaNGA ancillary AGN programme (MANGA_TARGET3 bits AGN_BAT,
  AGN_OIII, AGN_WISE, AGN_PALOMAR; see :data:`~manga_assets.dap.datamodel.MNGTARG3_AGN_BITS`);
- ``catalog``: it is listed in a user-supplied AGN catalogue (e.g. a plate-IFU list cut from
  Comerford et al. 2020), a CSV with a ``plateifu`` column or a FITS table with ``PLATEIFU``.

``agn_source`` joins the sources that apply with '+', in that order ('bpt+catalog'), and is '' for
galaxies that are not AGN.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from manga_assets.analysis.bpt import BPT_CLASSES, classify_centre
from manga_assets.dap.datamodel import MNGTARG3_AGN_BITS
from manga_assets.sas.paths import PlateIFU

if TYPE_CHECKING:
    from manga_assets.cubes.cube_file import Cube

logger = logging.getLogger(__name__)

AGN_BPT_CLASSES: tuple[str, ...] = ("seyfert", "liner")
AGN_SOURCES: tuple[str, ...] = ("bpt", "mngtarg3", "catalog")
MNGTARG3_AGN_MASK: int = sum(1 << bit for bit in MNGTARG3_AGN_BITS.values())
# How the anomaly scores pick each galaxy's comparison galaxies: its measured central BPT class,
# or (None) galaxies of similar depth from the whole sample.
CALIBRATIONS: tuple[str, ...] = ("bpt_class", "depth")


def centre_classes(cubes: Iterable[tuple[str, Cube]], snr_min: float = 3.0) -> pd.DataFrame:
    """The BPT class of each galaxy's centre with its evidence, one row per galaxy.

    ``cubes`` yields ``(plateifu, cube)``; each row is ``plateifu`` and the fields of
    :func:`~.bpt.classify_centre` (``bpt_class`` among them), as the ``agn_sample`` asset records
    them and :func:`build_agn_sample` reads them.
    """
    rows = []
    for plateifu, cube in cubes:
        centre = classify_centre(cube.flux, cube.ivar, cube.mask, cube.lines, snr_min=snr_min)
        rows.append({"plateifu": plateifu, **centre.as_row()})
    return pd.DataFrame(rows)


def calibration_classes(
    calibrate_by: str, plateifus: Sequence[str], agn_sample: pd.DataFrame
) -> list[str] | None:
    """Per galaxy of ``plateifus``, the label its anomaly score is calibrated with.

    ``calibrate_by`` "bpt_class": the galaxy's measured central class from ``agn_sample`` (a
    galaxy the sample has not classified, none should be, is "unclassified"); "depth": None
    (:func:`~.anomaly.anomaly_scores` then compares galaxies of similar depth).

    Raises
    ------
    ValueError
        If ``calibrate_by`` is not one of :data:`CALIBRATIONS`.
    """
    if calibrate_by not in CALIBRATIONS:
        raise ValueError(
            f"anomaly_scores: calibrate_by must be one of {CALIBRATIONS}, got {calibrate_by!r}"
        )
    if calibrate_by == "depth":
        return None
    by_galaxy = agn_sample.set_index("plateifu")["bpt_class"].astype(str)
    return by_galaxy.reindex(list(plateifus)).fillna("unclassified").tolist()


def read_agn_catalog(path: Path) -> list[str]:
    """The plate-IFU strings of a user AGN catalogue, as written in the file (stripped).

    Parameters
    ----------
    path : Path
        A ``.csv`` file with a ``plateifu`` column, or a ``.fits``/``.fit``/``.fits.gz`` file whose
        first table HDU with a ``PLATEIFU`` (any case) column is read.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the format is not CSV or FITS, or no plate-IFU column is found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AGN catalogue {str(path)!r} does not exist")
    name = path.name.lower()
    if name.endswith(".csv"):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = next((c for c in table.columns if c.strip().lower() == "plateifu"), None)
        if column is None:
            raise ValueError(
                f"AGN catalogue {str(path)!r} has no 'plateifu' column; "
                f"columns are {list(table.columns)!r}"
            )
        values = table[column].tolist()
    elif name.endswith((".fits", ".fit", ".fits.gz")):
        values = _read_fits_plateifus(path)
    else:
        raise ValueError(
            f"AGN catalogue {str(path)!r} is neither CSV (.csv) nor FITS (.fits, .fit, .fits.gz)"
        )
    return [str(v).strip() for v in values]


def _read_fits_plateifus(path: Path) -> list[str]:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus:
            if not isinstance(hdu, fits.BinTableHDU | fits.TableHDU) or hdu.data is None:
                continue
            column = next((c for c in hdu.columns.names if c.lower() == "plateifu"), None)
            if column is not None:
                return [str(v).strip() for v in hdu.data[column]]
    raise ValueError(f"AGN catalogue {str(path)!r} has no table HDU with a PLATEIFU column")


def _catalogue_members(path: Path, sample: set[str]) -> tuple[set[str], list[str]]:
    """Members of a user catalogue within ``sample``, and the entries that could not be used."""
    members: set[str] = set()
    unknown: list[str] = []
    for text in read_agn_catalog(path):
        try:
            plateifu = str(PlateIFU.parse(text))
        except ValueError:
            unknown.append(text)
            continue
        if plateifu in sample:
            members.add(plateifu)
        else:
            unknown.append(text)
    if unknown:
        logger.warning(
            "AGN catalogue %s: %d entries skipped (invalid or not in the sample), e.g. %s",
            path,
            len(unknown),
            ", ".join(repr(u) for u in unknown[:5]),
        )
    return members, unknown


def build_agn_sample(
    bpt_rows: pd.DataFrame,
    catalog: pd.DataFrame,
    agn_catalog_path: Path | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The AGN flag and its evidence for every galaxy with a central BPT class.

    Parameters
    ----------
    bpt_rows : DataFrame
        One row per galaxy in the sample: ``plateifu`` and ``bpt_class`` (one of
        :data:`~.bpt.BPT_CLASSES`), e.g. rows of :meth:`~.bpt.CentralBPT.as_row` plus plateifu.
    catalog : DataFrame
        DRPall-derived rows with ``plateifu`` and ``mngtarg3``; galaxies absent from it, or with a
        missing ``mngtarg3``, count as not targeted.
    agn_catalog_path : Path, optional
        A user AGN catalogue (see :func:`read_agn_catalog`).

    Returns
    -------
    sample : DataFrame
        Columns ``plateifu``, ``bpt_class``, ``is_agn``, ``agn_source``, in ``bpt_rows`` order.
    unknown_plateifus : list of str
        Catalogue entries that are not valid plate-IFUs or not in ``bpt_rows``; they are skipped
        (and logged as a warning), not fatal. Empty without a catalogue.

    Raises
    ------
    ValueError
        If ``bpt_rows`` lacks a column, repeats a plate-IFU or holds an unknown class, or
        ``catalog`` lacks ``plateifu`` or ``mngtarg3``.
    """
    for column in ("plateifu", "bpt_class"):
        if column not in bpt_rows.columns:
            raise ValueError(f"bpt_rows has no {column!r} column")
    plateifus = bpt_rows["plateifu"].astype(str).to_numpy()
    if pd.Index(plateifus).has_duplicates:
        raise ValueError("bpt_rows repeats plate-IFUs; expected one row per galaxy")
    bpt_class = bpt_rows["bpt_class"].astype(str).to_numpy()
    unknown_classes = sorted(set(bpt_class) - set(BPT_CLASSES))
    if unknown_classes:
        raise ValueError(f"unknown BPT classes {unknown_classes!r}; known: {BPT_CLASSES!r}")

    if "plateifu" not in catalog.columns or "mngtarg3" not in catalog.columns:
        raise ValueError(
            f"catalog needs 'plateifu' and 'mngtarg3' columns; it has {list(catalog.columns)!r}"
        )
    targets = (
        catalog.assign(plateifu=catalog["plateifu"].astype(str))
        .drop_duplicates("plateifu")
        .set_index("plateifu")["mngtarg3"]
    )
    mngtarg3 = pd.to_numeric(targets.reindex(plateifus), errors="coerce").fillna(0)

    from_bpt = np.isin(bpt_class, AGN_BPT_CLASSES)
    from_mngtarg3 = (mngtarg3.to_numpy(dtype=np.int64) & MNGTARG3_AGN_MASK) != 0
    unknown: list[str] = []
    from_catalog = np.zeros(len(plateifus), dtype=bool)
    if agn_catalog_path is not None:
        members, unknown = _catalogue_members(Path(agn_catalog_path), set(plateifus))
        from_catalog = np.isin(plateifus, sorted(members))

    flags = np.column_stack([from_bpt, from_mngtarg3, from_catalog])
    source = ["+".join(s for s, on in zip(AGN_SOURCES, row, strict=True) if on) for row in flags]
    sample = pd.DataFrame(
        {
            "plateifu": plateifus,
            "bpt_class": bpt_class,
            "is_agn": flags.any(axis=1),
            "agn_source": source,
        }
    )
    return sample, unknown
