"""Benchmark of the whole-sample analyses at survey scale (10,000 galaxies, 32 latent dimensions).

Times UMAP, the anomaly scores, the neighbour table and single-galaxy neighbour look-ups from a
saved Parquet file, each next to a baseline run in the same process:

- UMAP against a PCA projection (what a map costs beyond a linear one);
- anomaly scores against the k-NN distance alone (what the isolation forest and percentiles add);
- exact brute-force k-NN against scikit-learn's ball tree on the same arrays, and the full
  neighbour table against the bare brute-force search (what building the table costs);
- a filtered look-up (:func:`neighbours_of`) against reading the whole table and filtering.

Every step is timed without tracing, then run again under ``tracemalloc`` for its peak traced
allocation (NumPy buffers are traced; numba's are not, so UMAP is under-counted) and the process's
peak resident set size so far (``ru_maxrss``). numba compiles UMAP's kernels on first use: a
50-galaxy warm-up and a first large call (which compiles NN-descent) are reported apart from the
second large call, the steady-state cost in a long-lived process.

Run: ``.venv/bin/python benchmarks/analysis.py [--n 10000] [--dim 32] [--lookups 200]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from manga_assets.analysis.anomaly import anomaly_scores, knn_distance
from manga_assets.analysis.embedding import pca_embedding, umap_embedding
from manga_assets.analysis.latent import latent_matrix, standardise
from manga_assets.analysis.neighbours import latent_neighbours, neighbours_of, write_neighbour_table

MIB = 1024 * 1024


def synthetic_latents(n: int, dim: int, seed: int) -> pd.DataFrame:
    """Latents with structure: 12 anisotropic clusters in a 6-D subspace, 1% outliers."""
    rng = np.random.default_rng(seed)
    n_clusters, intrinsic = 12, 6
    # Clusters live in a 6-D subspace embedded in ``dim`` dimensions, like real latents.
    basis = np.linalg.qr(rng.normal(size=(dim, intrinsic)))[0]
    centres = rng.normal(scale=4.0, size=(n_clusters, intrinsic))
    scales = rng.uniform(0.3, 1.5, size=(n_clusters, intrinsic))
    member = rng.integers(0, n_clusters, size=n)
    low = centres[member] + rng.normal(size=(n, intrinsic)) * scales[member]
    latents = low @ basis.T + rng.normal(scale=0.05, size=(n, dim))
    outliers = rng.random(n) < 0.01
    latents[outliers] += rng.normal(scale=6.0, size=(outliers.sum(), dim))
    table = pd.DataFrame(latents.astype(np.float32), columns=[f"z{i:02d}" for i in range(dim)])
    ifus = (1901, 1902, 3701, 3702, 3703, 6101, 6102, 6103, 9101, 9102, 12701, 12702, 12703)
    table.insert(
        0, "plateifu", [f"{10000 + i // len(ifus)}-{ifus[i % len(ifus)]}" for i in range(n)]
    )
    table["recon_error"] = rng.lognormal(0.0, 0.3, size=n) * np.where(outliers, 3.0, 1.0)
    table["median_snr"] = rng.lognormal(2.0, 0.5, size=n)
    for line in ("Hb-4862", "OIII-5008", "Ha-6564"):
        table[f"n_{line}"] = 600
        table[f"chi2_{line}"] = 600 * table["recon_error"] * rng.lognormal(0.0, 0.05, size=n)
        table[f"peak_{line}"] = 3.0 + 0.4 * rng.standard_normal(n)
        table[f"extended_{line}"] = rng.standard_normal(n)
    return table


def measure(step: Callable[[], Any], memory: bool) -> tuple[Any, float, float, float]:
    """Run ``step``; return its result, seconds, peak traced MiB and peak RSS MiB so far."""
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    traced = float("nan")
    if memory:
        tracemalloc.start()
        step()
        traced = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB
    return result, seconds, traced, rss


def raw_neighbours(matrix: np.ndarray, k: int, algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's k + 1 nearest rows of every row, without building a table."""
    search = NearestNeighbors(n_neighbors=k + 1, algorithm=algorithm).fit(matrix)
    return search.kneighbors(matrix)


def lookup_latencies(
    lookup: Callable[[str], pd.DataFrame], plateifus: np.ndarray
) -> tuple[float, float]:
    """Median and 95th percentile of ``lookup`` latency in milliseconds."""
    times = []
    for plateifu in plateifus:
        start = time.perf_counter()
        lookup(plateifu)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="galaxies")
    parser.add_argument("--dim", type=int, default=32, help="latent dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per galaxy")
    parser.add_argument("--lookups", type=int, default=200, help="single-galaxy look-ups timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = parser.parse_args()
    memory = not args.no_memory

    latents = synthetic_latents(args.n, args.dim, args.seed)
    plateifus, matrix = latent_matrix(latents)
    rows: list[tuple[str, float, float, float, str]] = []

    def add(
        name: str,
        step: Callable[[], Any],
        baseline_seconds: float | None = None,
        trace: bool = True,
    ) -> tuple[Any, float]:
        """Measure ``step``, add its row to the table, return its result and seconds."""
        result, seconds, traced, rss = measure(step, memory and trace)
        ratio = f"{seconds / baseline_seconds:.1f}x" if baseline_seconds else ""
        rows.append((name, seconds, traced, rss, ratio))
        return result, seconds

    _, warmup = add("umap warm-up (numba JIT, 50 galaxies)", lambda: umap_embedding(matrix[:50]))
    _, pca_seconds = add("baseline: PCA embedding", lambda: pca_embedding(matrix))
    # Above 4096 points UMAP switches to NN-descent, compiled on its first large call.
    add(f"umap_embedding ({args.n} x {args.dim}), 1st call",
        lambda: umap_embedding(matrix, seed=args.seed), pca_seconds, trace=False)  # fmt: skip
    add(f"umap_embedding ({args.n} x {args.dim}), 2nd call",
        lambda: umap_embedding(matrix, seed=args.seed), pca_seconds)  # fmt: skip

    _, knn_seconds = add(
        "baseline: k-NN distance only", lambda: knn_distance(standardise(matrix), args.k)
    )
    add("anomaly_scores (4 components + rank)",
        lambda: anomaly_scores(latents, k=args.k), knn_seconds)  # fmt: skip

    scaled = standardise(matrix)
    _, tree_seconds = add(
        "baseline: ball-tree k-NN (raw arrays)", lambda: raw_neighbours(scaled, args.k, "ball_tree")
    )
    _, brute_seconds = add(
        "brute-force k-NN (raw arrays)",
        lambda: raw_neighbours(scaled, args.k, "brute"),
        tree_seconds,
    )
    table, _ = add(f"latent_neighbours table (brute, k={args.k})",
                   lambda: latent_neighbours(latents, k=args.k), brute_seconds)  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "neighbours.parquet"
        add("write_neighbour_table (Parquet)", lambda: write_neighbour_table(table, path))
        size_mib = path.stat().st_size / MIB
        wanted = np.random.default_rng(args.seed).choice(plateifus, size=args.lookups)

        def read_all_then_filter(plateifu: str) -> pd.DataFrame:
            everything = pd.read_parquet(path)
            return everything[everything["plateifu"] == plateifu]

        full_median, full_p95 = lookup_latencies(read_all_then_filter, wanted[:20])
        median, p95 = lookup_latencies(lambda p: neighbours_of(path, p, k=args.k), wanted)

    print(f"\nanalysis benchmark: {args.n} galaxies, {args.dim}-D latents, k = {args.k}\n")
    header = f"{'step':<46} {'seconds':>9} {'traced MiB':>11} {'max RSS MiB':>12} {'vs base':>8}"
    print(header)
    print("-" * len(header))
    for name, seconds, traced, rss, ratio in rows:
        print(f"{name:<46} {seconds:>9.3f} {traced:>11.1f} {rss:>12.0f} {ratio:>8}")
    print(f"\nneighbour table: {len(table)} rows, {size_mib:.2f} MiB Parquet")
    print(
        f"look-up latency, neighbours_of (pyarrow filter): median {median:.2f} ms, "
        f"p95 {p95:.2f} ms over {len(wanted)} galaxies"
    )
    print(
        f"look-up latency, baseline full read + filter:   median {full_median:.2f} ms, "
        f"p95 {full_p95:.2f} ms ({full_median / median:.1f}x the filtered median)"
    )
    print(f"umap warm-up (compile) took {warmup:.1f} s and is paid once per process")


if __name__ == "__main__":
    main()
