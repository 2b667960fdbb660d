"""The MAPS manifest's schema and its rows, as the maps_files asset writes them."""

from pathlib import Path

import pandas as pd

from manga_assets.sas.manifest import (
    MANIFEST_COLUMNS,
    STATUSES,
    build_manifest,
    manifests_by_plate,
    maps_digest,
)
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.transfer import DownloadResult


def _result(status: str, reason: str = "", sha256: str | None = None) -> DownloadResult:
    return DownloadResult(
        url="https://sas/x", dest=Path("x"), status=status, reason=reason,
        bytes=10 if status == "ok" else 0, sha256=sha256, fetched=status == "ok",
    )  # fmt: skip


def test_manifest_rows_carry_a_status_code_and_a_message():
    plateifus = [PlateIFU.parse(p) for p in ("8485-1901", "8485-1902", "7443-3701")]
    results = [_result("ok", sha256="a" * 64), _result("ok", sha256="b" * 64), _result("missing",
               "HTTP 404")]  # fmt: skip
    checked = [("3.1.0", ""), ("", "no END card"), ("", "")]
    at = pd.Timestamp("2026-01-01", tz="UTC")
    manifest = build_manifest(plateifus, ["l1", "l2", "l3"], results, checked, at)

    assert list(manifest.columns) == ["plateifu", "plate", *MANIFEST_COLUMNS[1:]]
    assert manifest["status"].tolist() == ["ok", "invalid", "missing"]
    assert set(manifest["status"]) <= set(STATUSES)
    assert manifest["reason"].tolist() == ["", "no END card", "HTTP 404"]
    assert manifest["versdap"].tolist() == ["3.1.0", "", ""]

    by_plate = manifests_by_plate(manifest, ["8485", "7443", "9999"])
    assert sorted(by_plate) == ["7443", "8485", "9999"]
    assert list(by_plate["8485"].columns) == list(MANIFEST_COLUMNS)
    assert by_plate["9999"].empty
    # The digest follows the statuses and checksums, not the row order.
    plate = by_plate["8485"]
    assert maps_digest(plate) == maps_digest(plate.iloc[::-1])
    changed = plate.assign(sha256=["c" * 64, plate["sha256"].iloc[1]])
    assert maps_digest(changed) != maps_digest(plate)
