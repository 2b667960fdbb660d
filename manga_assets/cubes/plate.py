"""Extraction of every downloaded galaxy of a plate into cubes and a features table."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pandas as pd

from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.dap.errors import DapError
from manga_assets.layout import DataLayout
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.releases import Release

if TYPE_CHECKING:
    from manga_assets.dap.fitsstream import FitsLimits

# Columns copied from the catalogue into every features row.
CATALOG_FEATURE_COLUMNS = ("plateifu", "plate", "ifudesign", "mangaid", "ifudesignsize", "z")


def extract_plate(
    manifest: pd.DataFrame,
    catalog_rows: pd.DataFrame,
    layout: DataLayout,
    release: Release,
    settings: ExtractionSettings,
    *,
    previous: pd.DataFrame | None = None,
    max_workers: int = 2,
    log: Callable[[str], None] = lambda message: None,
    limits: FitsLimits | None = None,
) -> pd.DataFrame:
    """Extract the galaxies of one plate whose download succeeded.

    Returns one features row per galaxy of ``manifest``: ``status`` is 'ok' when its cube was
    written, the manifest status when the file never arrived, or 'invalid' with the reader's
    message when the file could not be read as a MAPS file of this release. Every row records
    ``maps_sha256`` (the manifest's) and ``settings_key``, so staleness can be computed from the
    products alone (:func:`manga_assets.staleness.stale_features`). A plate where every galaxy
    failed is a table of failed rows, never an error.

    ``previous`` is the plate's last features table: a galaxy whose MAPS file (by sha256) and
    extraction settings are unchanged, and whose cube is still on disk, keeps its row and cube
    instead of being extracted again. ``limits`` bounds what each MAPS file may make the
    reader read.
    """
    catalog_rows = catalog_rows.set_index("plateifu")
    settings_key = settings.key()
    reusable = {}
    if previous is not None and "settings_key" in previous:
        done = previous[(previous["status"] == "ok") & (previous["settings_key"] == settings_key)]
        reusable = {row["plateifu"]: row.to_dict() for _, row in done.iterrows()}

    def one(record: pd.Series) -> dict:
        plateifu = PlateIFU.parse(record["plateifu"])
        row = {c: catalog_rows.at[str(plateifu), c] for c in CATALOG_FEATURE_COLUMNS[1:]}
        # Every row records what it was made from, failed ones too: a row is current exactly
        # when its MAPS sha256 and settings key equal the manifest's and the code's.
        row.update(
            plateifu=str(plateifu), maps_sha256=record["sha256"], settings_key=settings_key,
            reused=False, n_valid_pixels=0, valid_fraction=0.0,
        )  # fmt: skip
        if record["status"] != "ok":
            return {**row, "status": record["status"], "reason": record["reason"]}
        cube_path = layout.cube(plateifu)
        earlier = reusable.get(str(plateifu))
        # A row from before the file's VERSDAP was recorded is extracted again, once.
        recorded = earlier is not None and isinstance(earlier.get("versdap"), str)
        if recorded and earlier["maps_sha256"] == record["sha256"] and cube_path.exists():
            return {**earlier, "reused": True}
        try:
            features = extract_galaxy(
                layout.mirror / record["location"],
                cube_path,
                settings,
                expected_dapver=release.dapver,
                expected_daptype=release.daptype,
                limits=limits,
            )
        except DapError as error:
            log(f"{plateifu}: {error}")
            return {**row, "status": "invalid", "reason": str(error)}
        return {**row, "status": "ok", "reason": "", **features}

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        rows = list(pool.map(one, (record for _, record in manifest.iterrows())))
    leading = ["plateifu", "status", "reason"]
    frame = pd.DataFrame(rows, columns=None if rows else [*leading, *CATALOG_FEATURE_COLUMNS[1:]])
    return frame[leading + [c for c in frame.columns if c not in leading]]
