"""Human effort: galaxies of interest found against galaxies looked at, for a simulated reviewer.

    python benchmarks/review.py --products /work/sci/realistic [--truth FILE] [--variant ae]
                                [--seeds 20] [--kind sf_ring] [--out benchmarks/REVIEW.md]
    python benchmarks/review.py --data-dir DATA --truth RELEASE/truth.parquet   # a pipeline's
    python benchmarks/review.py --build science                                 # builds its own

A simulated reviewer looks at the first galaxy of a queue, labels it from the synthetic
release's truth table, and looks at the next, one at a time. Three queues:

- **learned**: `manga_assets.review.queue` re-ranked after every label (the ``review_queue``
  asset and the explorer serve the same);
- **static**: the anomaly ranking (``anomaly_scores``' ``rank``);
- **random**: a random order.

Two reviewers: one interested in every planted anomaly, one in a single kind (``--kind``,
default ``sf_ring``) who labels every other galaxy ``not_interesting``. Both label the planted
``missing_line`` galaxies ``artefact`` (a line's data lost: data quality, not physics; the
pipeline flags them in ``quality_flags``), and these are not counted as found.

The intervals are over seeds: each seed reviews a random 80 % of the galaxies (and draws the
random order), so the figures say how much they hang on which galaxies a survey happens to hold.

Inputs, one of:

- ``--products DIR``: a directory of ``benchmarks/science.py`` (``latents_<variant>.parquet``,
  ``cubes/``, ``release/truth.parquet``, ``held_out.parquet``); the anomaly scores are computed
  here as the pipeline computes them (calibrated within each galaxy's measured BPT class);
- ``--data-dir DIR``: a pipeline data directory (``products/<variant>/latents.parquet`` and
  ``anomaly_scores.parquet``), with ``--truth``;
- ``--build DIR``: runs ``benchmarks/science.py --dir DIR --worlds realistic --variants ae``
  first (trains a model: an hour on a few cores), then reads ``DIR/realistic``.

It also measures the calibrated list (issue 22, item 5): the realised false-discovery rate of
Benjamini-Hochberg at q = 0.1 among the held-out galaxies (those of ``held_out.parquet``, which
the model never fitted; all galaxies where there is none), with a bootstrap interval over
galaxies. Planted anomalies of every kind are true discoveries; normal galaxies, the odd ones
(flat ratios, foreground stars, dust lanes) included, false.

Writes ``--out`` (default ``benchmarks/REVIEW.md``) and prints it; ratios are against the
static ranking.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from manga_assets.review.fdr import benjamini_hochberg, with_fdr
from manga_assets.review.queue import rank_queue, review_space

BUDGETS = (10, 20, 50, 100)
ARTEFACT_KINDS = ("missing_line",)
METHODS = ("learned", "static", "random")
SUBSAMPLE = 0.8
FDR_LEVEL = 0.1


def centre_classes(directory: Path, plateifus: list[str]) -> list[str]:
    """The measured central BPT class of each galaxy, as ``agn_sample`` measures it, from the
    cubes of a ``benchmarks/science.py`` directory ("unclassified" where a cube is missing)."""
    from manga_assets.analysis.bpt import classify_centre
    from manga_assets.cubes.extract import read_cube

    classes = []
    for plateifu in plateifus:
        path = directory / "cubes" / f"{plateifu}.npz"
        if not path.exists():
            classes.append("unclassified")
            continue
        cube = read_cube(path)
        classes.append(classify_centre(cube.flux, cube.ivar, cube.mask, cube.lines).bpt_class)
    return classes


def load_products(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, set | None]:
    """Latents, anomaly scores and the held-out galaxies (None: no such split) of the input."""
    from manga_assets.analysis.anomaly import anomaly_scores

    if args.data_dir is not None:
        products = args.data_dir / "products" / args.variant
        latents = pd.read_parquet(products / "latents.parquet")
        scores = pd.read_parquet(products / "anomaly_scores.parquet")
        return latents, scores, None
    directory = args.products
    latents = pd.read_parquet(directory / f"latents_{args.variant}.parquet")
    classes = centre_classes(directory, latents["plateifu"].tolist())
    scores = anomaly_scores(latents, calibration_classes=classes)
    held_out_path = directory / "held_out.parquet"
    held_out = None
    if held_out_path.exists():
        held_out = set(pd.read_parquet(held_out_path, columns=["plateifu"])["plateifu"])
    return latents, scores, held_out


def truth_path(args: argparse.Namespace) -> Path:
    if args.truth is not None:
        return args.truth
    for candidate in ("release/truth.parquet", "truth.parquet"):
        path = (args.products or args.data_dir) / candidate
        if path.exists():
            return path
    raise SystemExit("no truth table found: pass --truth RELEASE/truth.parquet")


def reviewer_labels(kind: np.ndarray, wanted: str | None) -> np.ndarray:
    """The label a reviewer gives each galaxy: interested in every planted kind (``wanted``
    None) or one kind only; data-quality kinds are artefacts."""
    labels = np.full(len(kind), "not_interesting", dtype=object)
    planted = (kind != "none") & ~np.isin(kind, ARTEFACT_KINDS)
    labels[planted if wanted is None else kind == wanted] = "interesting"
    labels[np.isin(kind, ARTEFACT_KINDS)] = "artefact"
    return labels


def simulate(space, truth_labels: np.ndarray, budget: int) -> np.ndarray:
    """Cumulative galaxies of interest found after each look, reviewing the learned queue."""
    plateifus = space.table["plateifu"].to_numpy()
    label_of = dict(zip(plateifus, truth_labels, strict=True))
    seen: list[str] = []
    given: list[str] = []
    found = np.zeros(budget, dtype=int)
    for step in range(min(budget, len(plateifus))):
        labels = pd.DataFrame({"plateifu": seen, "label": given})
        nxt = rank_queue(space, labels)["plateifu"].iloc[0]
        seen.append(nxt)
        given.append(label_of[nxt])
        found[step] = (found[step - 1] if step else 0) + (label_of[nxt] == "interesting")
    return found


def run_reviewer(
    latents: pd.DataFrame, scores: pd.DataFrame, kind_of: pd.Series, wanted: str | None,
    seeds: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Found-at-budget per method and seed: {method: (seeds, len(BUDGETS))}."""
    budget = max(BUDGETS)
    results = {method: np.zeros((seeds, len(BUDGETS))) for method in METHODS}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pool = scores[scores["plateifu"].isin(kind_of.index)]
        pool = pool.iloc[np.sort(rng.choice(len(pool), int(SUBSAMPLE * len(pool)), False))]
        space = review_space(latents, pool)
        kinds = kind_of.loc[space.table["plateifu"]].to_numpy()
        labels = reviewer_labels(kinds, wanted)
        interesting = labels == "interesting"
        curves = {
            "learned": simulate(space, labels, budget),
            # The space is in anomaly rank order: the static queue is its rows in order.
            "static": np.cumsum(interesting[:budget]),
            "random": np.cumsum(interesting[rng.permutation(len(interesting))[:budget]]),
        }
        for method, curve in curves.items():
            results[method][seed] = [curve[min(b, len(curve)) - 1] for b in BUDGETS]
    return results


def realised_fdr(
    scores: pd.DataFrame, kind_of: pd.Series, among: set | None, n_bootstrap: int, seed: int
) -> dict[str, float]:
    """Realised false-discovery rate of BH at `FDR_LEVEL` among ``among`` (default all), with
    a bootstrap 95 % interval over galaxies."""
    table = scores[scores["plateifu"].isin(kind_of.index)]
    if among is not None:
        table = table[table["plateifu"].isin(among)]
    p = 10.0 ** -table["anomaly_score"].to_numpy(dtype=np.float64)
    normal = (kind_of.loc[table["plateifu"]] == "none").to_numpy()

    def fdp(index: np.ndarray) -> tuple[float, int]:
        discovered = benjamini_hochberg(p[index]) <= FDR_LEVEL
        count = int(discovered.sum())
        return (float(normal[index][discovered].mean()) if count else 0.0), count

    value, count = fdp(np.arange(len(p)))
    rng = np.random.default_rng(seed)
    draws = np.array([fdp(rng.integers(0, len(p), len(p)))[0] for _ in range(n_bootstrap)])
    low, high = np.quantile(draws, [0.025, 0.975])
    return {
        "galaxies": len(p), "normal": int(normal.sum()), "discoveries": count,
        "fdr": value, "low": float(low), "high": float(high),
    }  # fmt: skip


def _cell(values: np.ndarray) -> str:
    low, high = np.quantile(values, [0.025, 0.975])
    return f"{values.mean():.1f} [{low:.0f}, {high:.0f}]"


def _ratio(learned: np.ndarray, static: np.ndarray) -> str:
    ratio = learned.mean() / static.mean() if static.mean() > 0 else float("inf")
    per_seed = learned / np.maximum(static, 1e-9)
    low, high = np.quantile(np.where(static > 0, per_seed, np.nan), [0.025, 0.975])
    return f"{ratio:.2f} [{low:.2f}, {high:.2f}]"


def effort_table(name: str, results: dict[str, np.ndarray], total: int) -> str:
    rows = [f"### {name} ({total} galaxies of interest in the whole sample)", "",
            "| looked at | " + " | ".join(METHODS) + " | learned / static |",
            "|---" * (len(METHODS) + 2) + "|"]  # fmt: skip
    for i, budget in enumerate(BUDGETS):
        cells = [_cell(results[m][:, i]) for m in METHODS]
        ratio = _ratio(results["learned"][:, i], results["static"][:, i])
        rows.append(f"| {budget} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--products", type=Path, help="a benchmarks/science.py world directory")
    source.add_argument("--data-dir", type=Path, help="a pipeline data directory")
    source.add_argument("--build", type=Path, help="build one with benchmarks/science.py here")
    parser.add_argument("--truth", type=Path, help="truth.parquet (default: DIR/release/...)")
    parser.add_argument("--variant", default="ae")
    parser.add_argument("--kind", default="sf_ring", help="the one-kind reviewer's kind")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("REVIEW.md"))
    args = parser.parse_args()
    if args.build is not None:
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("science.py")), "--dir",
             str(args.build), "--worlds", "realistic", "--variants", args.variant, "--out",
             str(args.build / "SCIENCE.md")],
            check=True,
        )  # fmt: skip
        args.products = args.build / "realistic"

    started = time.perf_counter()
    latents, scores, held_out = load_products(args)
    truth = pd.read_parquet(truth_path(args), columns=["plateifu", "anomaly_kind"])
    kind_of = truth.set_index("plateifu")["anomaly_kind"].astype(str)
    kind_of = kind_of[kind_of.index.isin(scores["plateifu"])]
    if args.kind not in set(kind_of):
        raise SystemExit(f"no planted {args.kind!r} galaxy; kinds are {sorted(set(kind_of))}")

    sections = []
    reviewers = {"every planted anomaly": None, f"{args.kind} only": args.kind}
    summary = []
    for name, wanted in reviewers.items():
        results = run_reviewer(latents, scores, kind_of, wanted, args.seeds)
        total = int((reviewer_labels(kind_of.to_numpy(), wanted) == "interesting").sum())
        sections.append(effort_table(f"Reviewer interested in {name}", results, total))
        at_50 = BUDGETS.index(50)
        summary.append((name, results["learned"][:, at_50], results["static"][:, at_50]))
    fdr = realised_fdr(with_fdr(scores), kind_of, held_out, args.bootstrap, 0)
    seconds = time.perf_counter() - started

    source_text = args.products or args.data_dir
    lines = [
        "# Human effort: galaxies of interest found against galaxies looked at", "",
        f"`{' '.join(['python', *sys.argv])}`", "",
        f"Input: `{source_text}` (model {args.variant}); {len(kind_of)} galaxies; {args.seeds} "
        f"seeds, each reviewing a random {SUBSAMPLE:.0%} of them; {seconds:.0f} s. Cells: mean "
        "found [95 % interval over seeds]; the ratio is of the means [its 95 % interval over "
        "seeds].", "",
        "In the first 50 looked at, learned / static: "
        + "; ".join(f"{n}: {learned.mean() / max(static.mean(), 1e-9):.2f}"
                    for n, learned, static in summary) + ".", "",
        *sections,
        "## Calibrated list", "",
        f"Benjamini-Hochberg at q = {FDR_LEVEL} among "
        f"{'the held-out' if held_out is not None else 'all'} galaxies ({fdr['galaxies']}, "
        f"{fdr['normal']} normal): {fdr['discoveries']} discoveries, realised false-discovery "
        f"rate {fdr['fdr']:.3f} [{fdr['low']:.3f}, {fdr['high']:.3f}] (bootstrap 95 %, "
        f"{args.bootstrap} resamples of the galaxies).", "",
    ]  # fmt: skip
    report = "\n".join(lines)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
