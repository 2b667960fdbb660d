"""Benchmark: 10,000 deterministic mutations of real and synthetic MAPS headers, counted.

Each mutation (truncation, huge, negative and ill-typed sizes, a missing END card, duplicated
keywords, channel keywords out of range, flipped bytes, header bombs, gzip bombs; see
``manga_assets_tests/fits_fuzz.py``) is read by ``read_maps`` under a 2 s and 64 MiB budget.
The counts printed are the acceptance of issue 23: hangs, untyped exceptions and runs over
64 MiB must be 0, and every other mutation a typed error or values equal to astropy's.

Run ``python benchmarks/fits_fuzz.py`` (``--count``, ``--seed``; about 15 minutes for 10,000
on one core). The real file is read from ``shared/data/real/`` beside the checkout; without it
only the synthetic seeds are used (and the output says so).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from manga_assets_tests.fits_builders import write_maps
from manga_assets_tests.fits_fuzz import MUTATORS, OUTCOMES, Seed, run_fuzz
from manga_assets_tests.real_data import REAL_MAPS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="mutations to run")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        seeds = [
            Seed.from_file("synthetic DR17", write_maps(directory / "dr17.fits.gz")),
            Seed.from_file(
                "synthetic DR15",
                write_maps(directory / "dr15.fits", dapver="2.2.1", compress=False),
            ),
        ]
        if REAL_MAPS.is_file():
            seeds.insert(0, Seed.from_file("real", REAL_MAPS))
        else:
            print(f"the real MAPS file is absent ({REAL_MAPS}); synthetic seeds only")
        bad: list[str] = []

        def remember(mutation, verdict) -> None:
            bad.append(f"{mutation.description}: {verdict.outcome}, "
                       f"{verdict.peak_bytes >> 20} MiB, {verdict.detail[:200]}")  # fmt: skip

        started = time.perf_counter()
        counts = run_fuzz(seeds, args.count, directory, seed=args.seed, on_bad=remember)
        seconds = time.perf_counter() - started

    print(f"{args.count} mutations of {', '.join(s.name for s in seeds)} in {seconds:.0f} s")
    print(f"  hangs (over 2 s):      {counts['hang']}")
    print(f"  untyped exceptions:    {counts['untyped']}")
    print(f"  over 64 MiB:           {counts['over_memory']}")
    print(f"  typed errors:          {counts['typed']}")
    print(f"  equal to astropy:      {counts['equal']}")
    print(f"  unequal to astropy:    {counts['unequal']}")
    print(f"  slowest read:          {counts['max_seconds_x1000'] / 1000:.2f} s")
    print(f"  largest peak:          {counts['max_peak_mib']} MiB")
    print("  by mutation (" + ", ".join(OUTCOMES) + "):")
    for name in MUTATORS:
        row = ", ".join(str(counts[f"{name}:{outcome}"]) for outcome in OUTCOMES)
        print(f"    {name:12s} {row}")
    for line in bad[:20]:
        print(f"  BAD {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
