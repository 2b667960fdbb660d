"""Benchmark: concurrent against sequential SAS downloads, and memory against file count.

Builds a synthetic SAS tree of small gzip'd FITS-like files, serves it with the loopback mirror
with a fixed per-request latency (a stand-in for the distance to data.sdss.org), and downloads it
with ``max_workers=1`` (the baseline) and then with many workers, in one process. It then
measures the peak of Python allocations (tracemalloc) while downloading 50 and then 200 files,
to show that memory does not grow with the number of files.

Run ``python benchmarks/download.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from manga_assets.mirror.server import MirrorServer
from manga_assets.sas.transfer import Downloader, DownloadResult

FITS_HEADER = (
    "".join(card.ljust(80) for card in ("SIMPLE  =                    T", "NAXIS   =    0", "END"))
    .ljust(2880)
    .encode("ascii")
)


@dataclass(frozen=True)
class Run:
    label: str
    files: int
    workers: int
    seconds: float
    total_bytes: int

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / 1e6 / self.seconds


def build_tree(root: Path, count: int, seed: int = 0) -> list[str]:
    """Write ``count`` gzip'd files of 100-300 kB of random (incompressible) payload."""
    rng = random.Random(seed)
    locations = []
    for index in range(count):
        location = f"dr17/manga/bench/{index // 20}/file-{index:04d}.fits.gz"
        path = root / location
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = rng.randbytes(rng.randint(100_000, 300_000))
        path.write_bytes(gzip.compress(FITS_HEADER + payload, compresslevel=1, mtime=0))
        locations.append(location)
    return locations


def download(
    server_url: str, locations: list[str], dest: Path, workers: int
) -> tuple[float, list[DownloadResult]]:
    jobs = [(f"{server_url}/{location}", dest / location) for location in locations]
    with Downloader(max_workers=workers) as downloader:
        started = time.perf_counter()
        results = downloader.fetch_many(jobs)
        elapsed = time.perf_counter() - started
    failed = [result for result in results if not result.ok]
    if failed:
        sys.exit(f"benchmark aborted: {len(failed)} downloads failed, e.g. {failed[0].reason}")
    return elapsed, results


def peak_python_memory(server_url: str, locations: list[str], dest: Path, workers: int) -> int:
    """Peak bytes allocated by Python (client and server threads) while downloading."""
    tracemalloc.start()
    try:
        download(server_url, locations, dest, workers)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="manga-download-bench-") as scratch:
        scratch_dir = Path(scratch)
        locations = build_tree(scratch_dir / "sas", args.files)
        total_bytes = sum((scratch_dir / "sas" / loc).stat().st_size for loc in locations)
        rss_before = max_rss_mb()
        with MirrorServer(scratch_dir / "sas", latency_s=args.latency) as server:
            runs = []
            for label, workers in (("sequential", 1), ("concurrent", args.workers)):
                seconds, _ = download(server.url, locations, scratch_dir / label, workers)
                runs.append(Run(label, len(locations), workers, seconds, total_bytes))
            peaks = {
                count: peak_python_memory(
                    server.url, locations[:count], scratch_dir / f"mem-{count}", args.workers
                )
                for count in (min(50, args.files), args.files)
            }
        rss_after = max_rss_mb()

    print(
        f"\n{args.files} files, {total_bytes / 1e6:.1f} MB in all, "
        f"{args.latency * 1000:.0f} ms latency per request\n"
    )
    print(f"{'run':<12}{'workers':>8}{'wall s':>9}{'files/s':>9}{'MB/s':>8}")
    for run in runs:
        print(
            f"{run.label:<12}{run.workers:>8}{run.seconds:>9.2f}"
            f"{run.files_per_s:>9.1f}{run.mb_per_s:>8.1f}"
        )
    speedup = runs[0].seconds / runs[1].seconds
    print(f"\nconcurrent / sequential speed-up: {speedup:.1f}x (target >= 6x)")
    print("\npeak Python allocations while downloading (tracemalloc, client + server threads):")
    for count, peak in peaks.items():
        print(f"  {count:>4} files: {peak / 1e6:6.2f} MB")
    print(f"process max RSS growth over the whole benchmark: {rss_after - rss_before:.1f} MB")


if __name__ == "__main__":
    main()
