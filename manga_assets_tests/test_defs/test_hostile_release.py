"""A served release with hostile MAPS files beside good ones: the run goes on and says why.

The release holds a header bomb, a header without END, a gzip bomb and a file declaring 10**12
axes (``mirror build --hostile``). Each is recorded invalid in the manifest with the reader's
reason; the good galaxies of the same plates become cubes.
"""

from __future__ import annotations

import time

import pandas as pd
from dagster import DagsterInstance

from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.settings import Settings
from manga_assets.synthetic.spec import HOSTILE_FAULT_KINDS
from manga_assets_tests.conftest import build_small_release

REASONS = {
    "header_bomb": "a header runs over 100 blocks",
    "no_end_card": "without an END card",
    "gzip_bomb": "inflated from",
    "huge_naxis": "NAXIS = 1000000000000, outside 0-999",
}


def test_a_run_over_hostile_files_succeeds_and_lists_each_with_its_reason(tmp_path):
    release = build_small_release(
        tmp_path / "release", n_plates=2, galaxies_per_plate=5, hostile=True
    )
    hostile = {kind: plateifu for plateifu, kind in release.faults}
    assert sorted(hostile) == sorted(HOSTILE_FAULT_KINDS)

    with MirrorServer(release.root) as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=tmp_path / "data")
        started = time.perf_counter()
        summary = run_pipeline(
            settings,
            instance=DagsterInstance.ephemeral(),
            log=lambda message: None,
            acquisition_only=True,
        )
        seconds = time.perf_counter() - started

    products = settings.data_dir / "products"
    manifest = pd.concat(pd.read_parquet(p) for p in (products / "manifest").glob("*.parquet"))
    manifest = manifest.set_index("plateifu")
    for kind, plateifu in hostile.items():
        assert manifest.at[plateifu, "status"] == "invalid", kind
        reason = manifest.at[plateifu, "reason"]
        assert REASONS[kind] in reason and f"manga-{plateifu}-MAPS" in reason, (kind, reason)
        assert "Delete it and download it again" in reason

    features = pd.concat(pd.read_parquet(p) for p in (products / "features").glob("*.parquet"))
    features = features.set_index("plateifu")
    for kind, plateifu in hostile.items():
        assert features.at[plateifu, "status"] == "invalid"
        assert REASONS[kind] in features.at[plateifu, "reason"]
    # The good galaxies of the same plates were extracted: the plates and the run went on.
    assert summary.cubes == int((features["status"] == "ok").sum()) >= 3
    hostile_plates = {plateifu.split("-")[0] for plateifu in hostile.values()}
    assert hostile_plates <= {p.split("-")[0] for p in features.index[features["status"] == "ok"]}
    assert seconds < 120, f"the run took {seconds:.0f} s"
