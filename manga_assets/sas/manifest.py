"""The MAPS manifest: a row per galaxy of a plate saying whether its MAPS file is in the mirror.

Written by the ``maps_files`` asset (``manifest/<plate>.parquet``), read by the cube extraction and
by the runner. ``status`` is a code (:data:`STATUSES`); ``reason`` is the message for people, empty
when the file is usable; nothing reads a decision back out of ``reason``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.transfer import DownloadResult

# The columns of a plate's manifest, in order.
MANIFEST_COLUMNS = (
    "plateifu", "status", "reason", "bytes", "sha256", "fetched", "location",
    # The DAP version named in the file's primary header ('' when it did not arrive).
    "versdap",
    # When the server was asked: `manga-assets run` re-asks only after a while.
    "checked_at",
)  # fmt: skip
# A download's statuses (`DownloadResult.status`), and "invalid": the file arrived whole but the
# FITS reader refused it.
STATUSES = ("ok", "missing", "corrupt", "error", "invalid")


def build_manifest(
    plateifus: Sequence[PlateIFU],
    locations: Sequence[str],
    results: Sequence[DownloadResult],
    checked: Sequence[tuple[str, str]],
    checked_at: pd.Timestamp,
) -> pd.DataFrame:
    """The manifest rows of a batch of galaxies, with a ``plate`` column to split them by.

    ``checked`` is, per download, (VERSDAP, why the reader refused the file), ('', '') for a file
    that did not arrive or was accepted.
    """
    refused = [why for _, why in checked]
    manifest = pd.DataFrame(
        {
            "plateifu": [str(p) for p in plateifus],
            "plate": [p.plate for p in plateifus],
            "status": [
                "invalid" if why else r.status for r, why in zip(results, refused, strict=True)
            ],
            "reason": [why or r.reason for r, why in zip(results, refused, strict=True)],
            "bytes": [r.bytes for r in results],
            "sha256": [r.sha256 or "" for r in results],
            "fetched": [r.fetched for r in results],
            "location": list(locations),
            "versdap": [versdap for versdap, _ in checked],
            "checked_at": checked_at,
        }
    )
    return manifest[["plateifu", "plate", *MANIFEST_COLUMNS[1:]]]


def manifests_by_plate(manifest: pd.DataFrame, plates: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Each plate's manifest (without ``plate``); an empty one for a plate with no galaxy."""
    by_plate = {str(plate): rows.drop(columns="plate") for plate, rows in manifest.groupby("plate")}
    for plate in plates:
        by_plate.setdefault(plate, manifest.iloc[:0].drop(columns="plate"))
    return by_plate


def maps_digest(manifest: pd.DataFrame) -> str:
    """Digest of a plate's manifest: which galaxies, with which status and MAPS sha256."""
    rows = manifest.sort_values("plateifu")
    parts = rows["plateifu"] + ":" + rows["status"] + ":" + rows["sha256"]
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]
