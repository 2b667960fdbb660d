"""Extraction of one galaxy against a plain gzip decompression of its MAPS file.

    python benchmarks/extraction.py [--galaxies 5] [--repeats 3]

Writes a synthetic DR17 release of 127-fibre galaxies in full format (all 64 HDUs), then times,
per file and in one process:

- baseline: a plain full gzip decompression of the file (read and discard);
- extraction: read the three EMLINE_GFLUX* HDUs, mask, resample to 32x32, write the NPZ and
  compute the features row (what ``line_cubes`` does per galaxy);
- for reference, the same three HDUs read through ``astropy.io.fits.open``.

Prints the best of ``--repeats`` for each and the ratio extraction / baseline (target <= 1.0),
and the galaxies per second per core of the extraction.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.synthetic.release import build_release
from manga_assets.synthetic.spec import SyntheticReleaseSpec

CHUNK = 1 << 20


def decompress(path: Path) -> int:
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            total += len(chunk)
    return total


def astropy_read(path: Path) -> None:
    with fits.open(path) as hdul:
        for name in ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK"):
            _ = hdul[name].data.sum()


def best_of(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--galaxies", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        spec = SyntheticReleaseSpec(
            n_plates=1, galaxies_per_plate=args.galaxies, ifu_mix=((127, args.galaxies + 1),),
            seed=3, lean=False,
        )  # fmt: skip
        release = build_release(scratch / "release", spec)
        settings = ExtractionSettings()
        rows = []
        for plateifu, path in sorted(release.maps_paths.items()):
            if not path.exists():
                continue
            raw_bytes = decompress(path)
            baseline = best_of(args.repeats, decompress, path)
            cube = scratch / "cubes" / f"{plateifu}.npz"
            extraction = best_of(args.repeats, extract_galaxy, path, cube, settings)
            astropy = best_of(args.repeats, astropy_read, path)
            rows.append((plateifu, path.stat().st_size, raw_bytes, baseline, extraction, astropy))

    print(f"{'plate-IFU':<12} {'gz MB':>7} {'raw MB':>7} {'gunzip s':>9} {'extract s':>10} "
          f"{'astropy s':>10} {'extract/gunzip':>15} {'astropy/gunzip':>15}")  # fmt: skip
    for plateifu, size, raw, baseline, extraction, astropy in rows:
        print(f"{plateifu:<12} {size / 1e6:7.1f} {raw / 1e6:7.1f} {baseline:9.3f} "
              f"{extraction:10.3f} {astropy:10.3f} {extraction / baseline:15.2f} "
              f"{astropy / baseline:15.2f}")  # fmt: skip
    ratio = statistics.median(r[4] / r[3] for r in rows)
    per_second = 1 / statistics.median(r[4] for r in rows)
    print(f"\nmedian extraction / full decompression: {ratio:.2f}x (target <= 1.0)")
    print(f"extraction throughput: {per_second:.1f} galaxies/s per core (127-fibre, full files)")


if __name__ == "__main__":
    main()
