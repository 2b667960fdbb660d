"""Dagster's overhead per plate partition, and the cost of a run with nothing new.

    python benchmarks/dagster_overhead.py [--plates 600]

Writes a lean synthetic release of ``--plates`` plates of about one galaxy each (so the work per
plate is small and the overhead shows), serves it on 127.0.0.1, and in one process times:

- baseline: the same work without Dagster: download every MAPS file with the project's
  downloader, then extract every plate with ``extract_plate``;
- pipeline: the acquisition slice through Dagster (catalogue run, then the plate runs in batches
  of PLATES_PER_RUN plates, as the new-plates sensor requests them) on a fresh instance;
- rerun: the same command again with nothing new, within the revalidation window (no request
  per file, no extraction);
- revalidating rerun: again with ``revalidate_after_hours=0`` (a conditional request per file).

Prints (pipeline - baseline) / plates as the overhead per plate partition, and rerun / pipeline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from manga_assets.cubes.extract import ExtractionSettings
from manga_assets.cubes.plate import extract_plate
from manga_assets.dap.catalog import read_dapall, read_drpall, select_cubes
from manga_assets.defs.runner import run_pipeline
from manga_assets.layout import DataLayout
from manga_assets.mirror.server import MirrorServer
from manga_assets.sas.paths import PlateIFU, maps_location
from manga_assets.sas.releases import get_release
from manga_assets.sas.transfer import Downloader
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release


def baseline(release_summary, server_url: str, data_dir: Path) -> float:
    """Download and extract everything with the core functions alone."""
    release = get_release("DR17")
    layout = DataLayout(data_dir)
    start = time.perf_counter()
    catalog = select_cubes(
        read_drpall(release_summary.drpall_path),
        read_dapall(release_summary.dapall_path, release.daptype),
    ).selected
    locations = [maps_location(release, PlateIFU.parse(p)) for p in catalog["plateifu"]]
    with Downloader() as downloader:
        results = downloader.fetch_many(
            [(f"{server_url}/{loc}", layout.mirror / loc) for loc in locations]
        )
    manifest = pd.DataFrame(
        {
            "plateifu": catalog["plateifu"],
            "plate": catalog["plate"],
            "status": [r.status for r in results],
            "reason": [r.reason for r in results],
            "sha256": [r.sha256 or "" for r in results],
            "location": locations,
        }
    )
    for plate, rows in manifest.groupby("plate"):
        extract_plate(rows, catalog[catalog["plate"] == plate], layout, release,
                      ExtractionSettings())  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plates", type=int, default=600)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        spec = SyntheticReleaseSpec(n_plates=args.plates, galaxies_per_plate=1, lean=True)
        started = time.perf_counter()
        release = build_release(scratch / "release", spec)
        print(f"release: {release.n_galaxies} cubes on {args.plates} plates, "
              f"written in {time.perf_counter() - started:.1f} s")  # fmt: skip

        with MirrorServer(release.root) as server:
            work = baseline(release, server.url, scratch / "baseline")
            settings = Settings(sas_url=server.url, release="DR17", data_dir=scratch / "data")
            instance = DagsterInstance.ephemeral()
            quiet = lambda message: None  # noqa: E731

            started = time.perf_counter()
            summary = run_pipeline(settings, instance=instance, log=quiet, acquisition_only=True)
            pipeline = time.perf_counter() - started

            started = time.perf_counter()
            again = run_pipeline(settings, instance=instance, log=quiet, acquisition_only=True)
            rerun = time.perf_counter() - started

            started = time.perf_counter()
            asked = run_pipeline(
                settings,
                instance=instance,
                log=quiet,
                acquisition_only=True,
                revalidate_after_hours=0,
            )
            revalidating = time.perf_counter() - started

    plates = len(summary.plates)
    print(f"\n{'':32} {'seconds':>9}")
    print(f"{'baseline (no Dagster)':32} {work:9.1f}")
    print(f"{'pipeline through Dagster':32} {pipeline:9.1f}   runs: {len(summary.run_ids)}")
    print(f"{'rerun, nothing new':32} {rerun:9.1f}   downloaded {again.downloaded}, "
          f"extracted {again.extracted}")  # fmt: skip
    print(f"{'rerun, revalidating every file':32} {revalidating:9.1f}   downloaded "
          f"{asked.downloaded}, extracted {asked.extracted}")  # fmt: skip
    print(f"\nDagster overhead per plate partition: {(pipeline - work) / plates * 1000:.0f} ms "
          f"({(pipeline - work) / pipeline:.0%} of the pipeline's time)")  # fmt: skip
    print(f"no-change rerun / first run: {rerun / pipeline:.2f} "
          f"({revalidating / pipeline:.2f} when every file is revalidated)")  # fmt: skip


if __name__ == "__main__":
    main()
