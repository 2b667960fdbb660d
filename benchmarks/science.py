"""How well the models find planted anomalies, against simple baselines, on held-out plates.

    python benchmarks/science.py --dir science [--plates 150] [--epochs 24] [--test-share 0.25]
                                 [--worlds realistic smooth]

Each world (`manga_assets.synthetic.spec.WORLDS`: the realistic one of clumpy, bright and odd
galaxies, and the smooth one) is measured in ``DIR/WORLD`` with the same figures, and a table
puts them side by side.

1. Writes (once, into ``DIR/WORLD/release``) a survey-like synthetic DR17 release: lean files,
   the DR17 bundle mix, correlated spaxel noise and planted anomalies; extracts every galaxy's
   cube and features with the pipeline's code (``DIR/WORLD/cubes``), and the cube of the real
   MAPS file of ``../shared/data/real/`` beside them.
2. Holds out a share of the plates. The models are trained on the other plates exactly as the
   ``{ae,vae}/model`` assets train them (default schedule), and the quality gate is measured.
3. Embeds every galaxy and scores anomalies with `manga_assets.analysis.anomaly.anomaly_scores`
   as the pipeline does by default, calibrated within each galaxy's measured central BPT class
   ("(combined)"), and against the whole sample instead ("calibrated by depth"). The figures are
   computed on the held-out plates only: the models never saw those galaxies.
4. Scores the same held-out galaxies with three baselines: a z-score of central line-ratio
   features, the chi-square of a noise-weighted PCA fit (as many components as latent
   dimensions) and an isolation forest on hand-made features.

Per method, with the figures of `manga_assets.analysis.evaluation` (the report's, defined once):
ROC AUC and average precision of the line-bearing anomalies, precision at 1 % and 5 % inspection
budgets, AUC per anomaly kind against normal galaxies, Spearman rho between the score and the
median H-alpha S/N among normal galaxies, and the shares of normal galaxies scoring above 1 and 2
(0.1 and 0.01 for an honest score); each with a bootstrap 95 % interval over galaxies. Then the
paired bootstrap difference in AUC between the best model and the best baseline, how the odd and the
brightest normal galaxies rank against the planted anomalies, and the real galaxy's score, rank,
deciding component and reduced chi-square per line.

Planted ``missing_line`` galaxies lose a whole line's data: a data-quality artefact, which the
pipeline reports in ``quality_flags`` and does not rank as physics. They are scored apart (flag
recall) and left out of the ranking figures, which are therefore named "line-bearing" (the
report shows the same figure as ``anomaly_auc_line_bearing`` beside the AUC of all planted
anomalies).

Writes ``benchmarks/SCIENCE.md`` (or ``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from manga_assets.analysis.evaluation import (
    CALIBRATION_LEVELS,
    DATA_QUALITY_KINDS,
    LINE_BEARING,
    bootstrap_intervals,
    normal_figures,
    paired_auc_difference,
    ranking_figures,
    roc_auc,
)
from manga_assets.cubes.cube_file import read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.synthetic.release import build_release
from manga_assets.synthetic.spec import WORLDS, SyntheticReleaseSpec

# The combined score with comparison galaxies from the whole sample, not the BPT class.
BY_DEPTH = ": calibrated by depth"
# The default score calibrated on the galaxies the model never fitted (validation, held-out).
NOT_FITTED = ": reference not fitted"
RATIO_FEATURES = ("log_nii_ha", "log_sii_ha", "log_oi_ha", "log_oiii_hb")
# Inspection budgets: shares of the held-out galaxies a person would look at.
BUDGETS = (0.01, 0.05)
AUC = f"auc{LINE_BEARING}"
AVERAGE_PRECISION = f"average_precision{LINE_BEARING}"
# Column names of the tables: the line-bearing figures say so.
LABELS = {
    AUC: "AUC, line-bearing anomalies",
    AVERAGE_PRECISION: "AP, line-bearing anomalies",
    f"precision_at_1pct{LINE_BEARING}": "precision at 1 %, line-bearing",
    f"precision_at_5pct{LINE_BEARING}": "precision at 5 %, line-bearing",
}
WHAT_IS_MEASURED = """What is measured, in a few lines (README, "The science", has the details):

- **The worlds.** `realistic` (the default of every release): star-forming disks of HII-region
  complexes (dN/dL ~ L^-1.7..-2, PSF-sized, on spiral arms and in patches), diffuse ionised gas
  with raised [NII], [SII] and [OI], a bright tail (central H-alpha S/N in the hundreds) and 4 %
  odd normal galaxies (flat line-ratio maps, foreground stars, dust lanes), calibrated against the
  real 7815-3702 within a factor of 2 (`benchmarks/REALISM.md`); `smooth`: the earlier smooth
  disks.
- **The loss.** The weights fit each galaxy's chi-square per pixel (5 % floor) through c log(1 + x
  / c), c = 10, so no galaxy decides what the model learns; beside them the model learns a per-line
  floor (the maximum-likelihood floor of the residuals it leaves), against which the scores count
  residuals.
- **The gate and early stopping.** The typical validation galaxy's FEV: per galaxy the share of the
  mean map's excess over the noise that the model removes, the median over galaxies, with a
  bootstrap interval; the PCA's on the same galaxies.
- **The scores.** Each component is a robust z-score against the 100 galaxies of the same
  central BPT class nearest in depth; its p-value is conformal on the sample (a fitted tail beyond
  10 exceedances, none for samples under 200). The combined statistic multiplies the two smallest
  residual p-values (two views must agree; no H-alpha stands alone) and is calibrated the same
  way, after the sample's own discoveries at FDR 0.1 leave the reference; "above 1" and "above 2"
  are the shares of held-out normals above those scores (honest: 0.1 and 0.01).
"""
# The DAP's own MAPS file of a bright star-forming galaxy (see ../shared/data/real/README.md).
REAL_MAPS = (
    Path(__file__).resolve().parents[2]
    / "shared/data/real/manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"
)
REAL_PLATEIFU = "7815-3702"


def centre_bpt_classes(directory: Path, plateifus) -> pd.DataFrame:
    """The BPT class of each galaxy's centre, as the pipeline's ``agn_sample`` asset measures it
    (`manga_assets.analysis.agn.centre_classes`, default S/N threshold) from the galaxy's cube."""
    from manga_assets.analysis.agn import centre_classes

    return centre_classes((p, read_cube(directory / "cubes" / f"{p}.npz")) for p in plateifus)


def _extract(job: tuple[str, str, str]) -> dict:
    plateifu, maps_path, cube_path = job
    try:
        row = extract_galaxy(Path(maps_path), Path(cube_path), ExtractionSettings())
        row["status"] = "ok"
    except Exception as error:  # a broken galaxy is data here, as in the pipeline
        row = {"status": "failed", "reason": str(error)}
    row["plateifu"] = plateifu
    return row


def prepare(directory: Path, spec: SyntheticReleaseSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The release's truth table and the features of every extracted cube (built once)."""
    features_path = directory / "features.parquet"
    release_dir = directory / "release"
    if features_path.exists():
        return pd.read_parquet(release_dir / "truth.parquet"), pd.read_parquet(features_path)
    started = time.perf_counter()
    summary = build_release(release_dir, spec)
    print(f"release: {summary.n_galaxies} galaxies in {time.perf_counter() - started:.0f} s")
    jobs = [
        (plateifu, str(path), str(directory / "cubes" / f"{plateifu}.npz"))
        for plateifu, path in summary.maps_paths.items()
    ]
    (directory / "cubes").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        rows = list(pool.map(_extract, jobs, chunksize=16))
    features = pd.DataFrame(rows)
    features.to_parquet(features_path, index=False)
    print(f"cubes: {int((features['status'] == 'ok').sum())} in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return pd.read_parquet(summary.truth_path), features


def median_ha_snr(cube_path: Path) -> float:
    cube = read_cube(cube_path)
    index = cube.lines.index("Ha-6564")
    good = ~cube.mask[index] & (cube.ivar[index] > 0)
    if not good.any():
        return 0.0
    return float(np.median(cube.flux[index][good] * np.sqrt(cube.ivar[index][good])))


def train_and_embed(
    directory: Path,
    galaxies: pd.DataFrame,
    test_plates: set[int],
    args: argparse.Namespace,
    real_cube: Path | None = None,
) -> dict:
    """Train both models on the training plates and embed every galaxy (and the real one);
    return the tables."""
    import torch

    from manga_assets.model.autoencoder import ModelConfig
    from manga_assets.model.dataset import build_training_set, open_training_set
    from manga_assets.model.inference import embed_cubes, latents_table
    from manga_assets.model.quality import assess_model
    from manga_assets.model.train import TrainConfig, train_model

    torch.set_num_threads(args.threads)
    train = galaxies[~galaxies["plate"].isin(test_plates)]
    training_dir = directory / "training_set"
    if not training_dir.exists():  # kept, so that one process per model can share it
        build_training_set(
            ((p, directory / "cubes" / f"{p}.npz") for p in train["plateifu"]), training_dir
        )
    training_set = open_training_set(training_dir)
    every = [(p, directory / "cubes" / f"{p}.npz") for p in galaxies["plateifu"]]
    if real_cube is not None:
        every.append((REAL_PLATEIFU, real_cube))
    fitted = set(training_set.plateifus(training_set.rows("train")))
    results = {}
    for variant in args.variants:
        config = ModelConfig(variant=variant)
        train_config = TrainConfig(epochs=args.epochs, seed=args.seed, num_threads=args.threads)
        started = time.perf_counter()
        result = train_model(
            config, train_config, training_dir, directory / "checkpoints" / variant,
            log=print, fresh=args.fresh,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        quality = assess_model(result.model, training_set)
        embedded = embed_cubes(result.model, config, every)
        table = latents_table(embedded, config)
        results[variant] = {
            "latents": table,
            "history": result.history,
            "quality": quality.to_dict(),
            "train_seconds": seconds,
            "galaxies_per_second": result.galaxies_per_second,
            "best_epoch": result.best_epoch,
            "fitted": fitted,
            "learned_floor": result.model.line_floors(),
        }
        print(f"{variant}: gate {quality.to_dict()}")
    return results


def baseline_scores(
    features: pd.DataFrame, latents: pd.DataFrame, pca_chi2: pd.Series
) -> dict[str, np.ndarray]:
    """Scores of the three simple methods, aligned with ``features``."""
    from sklearn.ensemble import IsolationForest

    from manga_assets.analysis.anomaly import robust_z

    ratios = features[list(RATIO_FEATURES)].to_numpy(dtype=np.float64)
    z = np.abs(np.column_stack([robust_z(column) for column in ratios.T]))
    line_ratio = np.nan_to_num(z, nan=0.0).max(axis=1)
    hand_made = features[
        [*RATIO_FEATURES, "valid_fraction", "snr_cen_Ha_6564", "flux_cen_Ha_6564"]
    ].copy()
    hand_made["log_flux_cen_Ha"] = np.log10(hand_made.pop("flux_cen_Ha_6564").clip(1e-3))
    matrix = np.nan_to_num(hand_made.to_numpy(dtype=np.float64), nan=0.0)
    forest = IsolationForest(n_estimators=300, random_state=0).fit(matrix)
    return {
        "line-ratio z-score": line_ratio,
        "weighted PCA chi2": pca_chi2.reindex(features["plateifu"]).to_numpy(),
        "isolation forest (features)": -forest.score_samples(matrix),
    }


def metrics(
    score: np.ndarray, kind: np.ndarray, snr: np.ndarray, samples: int, seed: int
) -> dict[str, tuple[float, float, float]]:
    """Each figure with its bootstrap 95 % interval: {name: (value, low, high)}.

    The ranking figures are of the line-bearing anomalies (``kind`` may still hold data-quality
    kinds: they are left out), the calibration figures of the normal galaxies.
    """

    def figures(index: np.ndarray) -> dict[str, float]:
        return {
            **ranking_figures(kind[index], score[index], budgets=BUDGETS, line_bearing_only=True),
            **normal_figures(kind[index], score[index], snr[index]),
        }

    return bootstrap_intervals(figures, len(score), samples, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("science"))
    parser.add_argument("--plates", type=int, default=150)
    parser.add_argument("--galaxies-per-plate", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--test-share", type=float, default=0.25)
    parser.add_argument("--variants", nargs="+", default=["ae", "vae"])
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0, help="split, training and bootstrap seed")
    parser.add_argument(
        "--release-seed", type=int, default=11,
        help="seed of the synthetic release (another seed: a release the scores were not tuned on)",
    )  # fmt: skip
    parser.add_argument(
        "--worlds", nargs="+", choices=WORLDS, default=list(WORLDS),
        help="synthetic worlds to measure side by side (each in DIR/WORLD)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--fresh", action="store_true", help="ignore training checkpoints")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("SCIENCE.md"))
    args = parser.parse_args()

    sections, summaries = [], []
    for world in args.worlds:
        section, summary = measure_world(args, world, args.dir / world)
        sections.append(section)
        summaries += summary
    report = "\n".join(
        ["# Anomaly detection on held-out plates", "", f"`{' '.join(['python', *sys.argv])}`", "",
         WHAT_IS_MEASURED, _summary_table(summaries), *sections]
    )  # fmt: skip
    args.out.write_text(report)
    print(report)


def measure_world(args: argparse.Namespace, world: str, directory: Path) -> tuple[str, list]:
    """Train, embed and score one world; its report section and one summary row per model."""
    from manga_assets.analysis.agn import calibration_classes
    from manga_assets.analysis.anomaly import anomaly_scores

    spec = SyntheticReleaseSpec(
        n_plates=args.plates,
        galaxies_per_plate=args.galaxies_per_plate,
        lean=True,
        seed=args.release_seed,
        world=world,
    )
    directory.mkdir(parents=True, exist_ok=True)
    truth, features = prepare(directory, spec)
    truth_columns = ["plateifu", "plate", "ifu_size", "bpt_class", "is_agn", "anomaly_kind",
                     "anomaly_line", "oddity"]  # fmt: skip
    galaxies = truth[truth_columns].merge(features[features["status"] == "ok"], on="plateifu")
    plates = np.array(sorted(galaxies["plate"].unique()))
    rng = np.random.default_rng(args.seed)
    test_plates = set(rng.choice(plates, int(round(args.test_share * len(plates))), False).tolist())
    real_cube = extract_real_file(directory)
    results = train_and_embed(directory, galaxies, test_plates, args, real_cube)

    test = galaxies[galaxies["plate"].isin(test_plates)].reset_index(drop=True)
    test["snr_ha"] = [median_ha_snr(directory / "cubes" / f"{p}.npz") for p in test["plateifu"]]
    ranked = test[~test["anomaly_kind"].isin(DATA_QUALITY_KINDS)].reset_index(drop=True)
    kind = ranked["anomaly_kind"].astype(str).to_numpy()
    snr = ranked["snr_ha"].to_numpy()

    methods: dict[str, np.ndarray] = {}
    flag_recall, real_rows, odd_rows = {}, [], []
    every = results[next(iter(results))]["latents"]["plateifu"].tolist()
    centre = centre_bpt_classes(directory, every)
    for variant, result in results.items():
        latents = result["latents"]
        # As the pipeline scores by default: calibrated within the measured BPT class, on the
        # whole sample; and, to see what fitting costs, on the galaxies the model never fitted.
        classes = calibration_classes("bpt_class", latents["plateifu"], centre)
        scores = anomaly_scores(latents, calibration_classes=classes).set_index("plateifu")
        not_fitted = ~latents["plateifu"].isin(result["fitted"]).to_numpy()
        unfitted_scores = anomaly_scores(
            latents, calibration_classes=classes, reference=not_fitted
        ).set_index("plateifu")
        by_depth = anomaly_scores(latents).set_index("plateifu")
        chosen = scores.loc[ranked["plateifu"]]
        methods[f"{variant} (combined)"] = chosen["anomaly_score"].to_numpy()
        methods[f"{variant}{NOT_FITTED}"] = unfitted_scores.loc[
            ranked["plateifu"], "anomaly_score"
        ].to_numpy()
        depth_scores = by_depth.loc[ranked["plateifu"], "anomaly_score"]
        methods[f"{variant}{BY_DEPTH}"] = depth_scores.to_numpy()
        components = ("line_excess", "coherent_residual", "extended_residual", "latent_density")
        for component in components:
            methods[f"{variant}: {component}"] = scores.loc[
                ranked["plateifu"], component
            ].to_numpy()
        flagged = scores.loc[test["plateifu"], "quality_flags"].str.len().gt(0).to_numpy()
        dq = test["anomaly_kind"].isin(DATA_QUALITY_KINDS).to_numpy()
        flag_recall[variant] = (
            float(flagged[dq].mean()) if dq.any() else float("nan"),
            float(flagged[~dq].mean()),
        )
        odd_rows.append(_odd_and_bright(variant, ranked, methods[f"{variant} (combined)"]))
        if real_cube is not None:
            real_rows.append(_real_file_row(variant, scores, latents, chosen))
    pca_chi2 = _pca_excess(directory, galaxies, test, results)
    methods.update(baseline_scores(ranked, results[next(iter(results))]["latents"], pca_chi2))

    table = {name: metrics(score, kind, snr, args.bootstrap, args.seed) for name, score in
             methods.items()}  # fmt: skip
    positive = kind != "none"
    model_names = [n for n in methods if n.endswith("(combined)")]
    baseline_names = [n for n in methods if ":" not in n and "(" not in n]
    best_model = max(model_names, key=lambda n: table[n][AUC][0])
    best_baseline = max(baseline_names, key=lambda n: table[n][AUC][0])
    difference = paired_auc_difference(
        methods[best_model], methods[best_baseline], positive, args.bootstrap, args.seed
    )
    report = _report(args, spec, galaxies, test, ranked, results, table, flag_recall,
                     best_model, best_baseline, difference)  # fmt: skip
    report += _odd_and_real_sections(odd_rows, real_rows)
    report += _normals_by_class(
        ranked, methods, [f"{v} (combined)" for v in results] + [f"{v}{BY_DEPTH}" for v in results]
    )
    # Kept for analysis: the tables the figures above come from.
    ranked.to_parquet(directory / "held_out.parquet", index=False)
    for variant, result in results.items():
        result["latents"].to_parquet(directory / f"latents_{variant}.parquet", index=False)
    (directory / "science.json").write_text(
        json.dumps({"metrics": table, "difference": difference}, indent=1, default=float)
    )
    summary = [
        _summary_row(world, variant, table[f"{variant} (combined)"], results[variant]["quality"],
                     difference if best_model.startswith(f"{variant} ") else None)
        for variant in results
    ]  # fmt: skip
    return report, summary


def extract_real_file(directory: Path) -> Path | None:
    """The real MAPS file's cube beside the synthetic ones (None where shared/ is absent)."""
    if not REAL_MAPS.exists():
        return None
    cube_path = directory / "cubes" / f"{REAL_PLATEIFU}.npz"
    if not cube_path.exists():
        extract_galaxy(REAL_MAPS, cube_path, ExtractionSettings())
    return cube_path


def _odd_and_bright(variant: str, ranked: pd.DataFrame, score: np.ndarray) -> dict:
    """How the odd and the brightest normal galaxies rank against the planted anomalies."""
    kind = ranked["anomaly_kind"].astype(str).to_numpy()
    normal = kind == "none"
    odd = normal & (ranked["oddity"].astype(str).to_numpy() != "none")
    snr = ranked["snr_ha"].to_numpy()
    bright = normal & (snr >= np.quantile(snr[normal], 0.9))
    top = score >= np.quantile(score, 0.95)
    row = {"model": variant, "odd": int(odd.sum()), "bright": int(bright.sum())}
    for name, members in (("odd", odd), ("bright", bright)):
        row[f"{name}_in_top5"] = float(top[members].mean()) if members.any() else np.nan
        keep = members | ~normal
        row[f"auc_vs_{name}"] = roc_auc(~normal[keep], score[keep])
    row["anomalies_in_top5"] = float(top[~normal].mean())
    return row


def _real_file_row(variant: str, scores: pd.DataFrame, latents: pd.DataFrame, held_out) -> dict:
    """The real galaxy's score, its rank among the held-out galaxies, what decided, and its
    reduced chi-square per line."""
    real = scores.loc[REAL_PLATEIFU]
    row = latents.set_index("plateifu").loc[REAL_PLATEIFU]
    lines = [c[len("chi2_") :] for c in latents.columns if c.startswith("chi2_")]
    reduced = {
        line: row[f"chi2_{line}"] / row[f"n_{line}"] for line in lines if row[f"n_{line}"] > 0
    }
    rank = 1 + int((held_out["anomaly_score"] > real["anomaly_score"]).sum())
    return {
        "model": variant,
        "score": float(real["anomaly_score"]),
        "rank": f"{rank} of {len(held_out) + 1}",
        "deciding": f"{real['anomaly_component']} {real['anomaly_line']}".strip(),
        "reduced_chi2": ", ".join(f"{line} {value:.1f}" for line, value in reduced.items()),
    }


def _odd_and_real_sections(odd_rows: list[dict], real_rows: list[dict]) -> str:
    lines = [
        "",
        "### Odd and bright normal galaxies against the planted anomalies",
        "",
        "Odd: normal galaxies with flat line-ratio maps, a masked foreground star or an edge-on "
        "dust lane; bright: the held-out normals in the top decile of median H-alpha S/N. "
        "\"top 5 %\": share above the held-out galaxies' 95th score percentile; AUC of the "
        "planted anomalies against that group alone.",
        "",
        "| model | odd | in top 5 % | AUC vs odd | bright | in top 5 % | AUC vs bright | "
        "anomalies in top 5 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in odd_rows:
        lines.append(
            f"| {r['model']} | {r['odd']} | {r['odd_in_top5']:.3f} | {r['auc_vs_odd']:.3f} | "
            f"{r['bright']} | {r['bright_in_top5']:.3f} | {r['auc_vs_bright']:.3f} | "
            f"{r['anomalies_in_top5']:.3f} |"
        )
    if real_rows:
        lines += [
            "",
            f"### The real galaxy {REAL_PLATEIFU} (the DAP's own MAPS file) among them",
            "",
            "| model | score | rank among held-out | deciding | reduced chi2 per line |",
            "|---|---|---|---|---|",
        ]
        for r in real_rows:
            lines.append(
                f"| {r['model']} | {r['score']:.2f} | {r['rank']} | {r['deciding']} | "
                f"{r['reduced_chi2']} |"
            )
    return "\n".join(lines) + "\n"


def _summary_row(world, variant, figures, quality, difference) -> dict:
    kinds = [
        value[0]
        for name, value in figures.items()
        if name.startswith("auc_") and not name.endswith(LINE_BEARING)
    ]
    return {
        "world": world,
        "model": variant,
        "auc": figures[AUC],
        "average_precision": figures[AVERAGE_PRECISION],
        "worst kind": (min(kinds), np.nan, np.nan),
        "rho_snr_normals": figures["rho_snr_normals"],
        **{f"above_{level}": figures[f"normals_above_{level}"] for level in CALIBRATION_LEVELS},
        "median FEV": (quality["fev"], quality["fev_low"], quality["fev_high"]),
        "gate": quality["passed"],
        "difference": difference,
    }


def _summary_table(rows: list[dict]) -> str:
    lines = [
        "## Both worlds side by side",
        "",
        "Per world and model, the pipeline's default score on held-out plates: AUC and average "
        "precision of the line-bearing anomalies (missing_line, a data-quality flag, left out), "
        "the worst anomaly kind's AUC, rho(score, S/N) among normals, the shares of "
        "held-out normals above 1 and 2 (honest: 0.1 and 0.01), the typical validation "
        "galaxy's FEV (the gate's statistic), and the best model's AUC over the best baseline.",
        "",
        "| world | model | AUC, line-bearing | AP, line-bearing | worst kind | rho | above 1 | "
        "above 2 | median FEV | gate | best minus baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        difference = _cell(r["difference"]) if r["difference"] else "-"
        lines.append(
            f"| {r['world']} | {r['model']} | {_cell(r['auc'])} | "
            f"{_cell(r['average_precision'])} | {r['worst kind'][0]:.3f} | "
            f"{_cell(r['rho_snr_normals'])} | {_cell(r['above_1'])} | {_cell(r['above_2'])} | "
            f"{_cell(r['median FEV'])} | {'pass' if r['gate'] else 'FAIL'} | {difference} |"
        )
    return "\n".join(lines) + "\n"


def _pca_excess(directory, galaxies, test, results) -> pd.Series:
    """Excess chi-square in noise units of the weighted-PCA fit of each held-out galaxy."""
    from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig
    from manga_assets.model.dataset import build_training_set, open_training_set
    from manga_assets.model.quality import pca_basis, pca_chi_square

    training_set = open_training_set(directory / "training_set")
    held_out_dir = directory / "held_out_set"
    if not held_out_dir.exists():
        build_training_set(
            ((p, directory / "cubes" / f"{p}.npz") for p in test["plateifu"]),
            held_out_dir,
            val_fraction=0.0,
        )
    held_out = open_training_set(held_out_dir)
    config = ModelConfig()
    mean, components = pca_basis(training_set, config.latent_dim)
    rows = held_out.rows("train")
    chi2, counts = pca_chi_square(ConvLSTMAutoencoder(config), held_out, rows, mean, components)
    excess = (chi2 - counts) / np.sqrt(2.0 * np.maximum(counts, 1))
    return pd.Series(excess, index=held_out.plateifus(rows))


def _cell(value: tuple[float, float, float]) -> str:
    point, low, high = value
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def _report(args, spec, galaxies, test, ranked, results, table, flag_recall,
            best_model, best_baseline, difference) -> str:  # fmt: skip
    kinds = sorted(set(ranked["anomaly_kind"]) - {"none"})
    columns = [*LABELS, "rho_snr_normals", "normals_above_1", "normals_above_2"] + [
        f"auc_{k}" for k in kinds]  # fmt: skip
    lines = [
        f"## The {spec.world} world",
        "",
        f"Release: {len(galaxies)} galaxies with cubes on {spec.n_plates} plates (synthetic DR17,"
        f" seed {spec.seed}); {len(test)} galaxies on {test['plate'].nunique()} held-out plates,"
        f" of which {int((ranked['anomaly_kind'] != 'none').sum())} planted anomalies and "
        f"{int((ranked['anomaly_kind'] == 'none').sum())} normal galaxies are ranked. Bootstrap "
        f"95 % intervals over galaxies ({args.bootstrap} resamples).",
        "",
        "| method | " + " | ".join(LABELS.get(c, c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, values in table.items():
        cells = [_cell(values[c]) if c in values else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Best model `{best_model}` minus best baseline `{best_baseline}`, paired bootstrap "
        f"difference in AUC of the line-bearing anomalies: {_cell(difference)}.",
        "",
        f"### Models ({spec.world} world)",
        "",
        "Validation chi2 per pixel pooled (the model, the mean map, the PCA); the gate's "
        "statistic: the typical validation galaxy's FEV (median over galaxies, bootstrap "
        "interval), and the PCA's; the model's learned floor (median over lines, max).",
        "",
        "| model | epochs run (best) | train s | galaxies/s | val chi2/pixel | mean map | PCA | "
        "median FEV [95 %] | PCA median FEV | learned floor | active dims | gate | held-out "
        "normals: median reduced chi2 (S/N terciles) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    normals = ranked[ranked["anomaly_kind"] == "none"]
    terciles = pd.qcut(normals["snr_ha"], 3, labels=False)
    for variant, result in results.items():
        q = result["quality"]
        reduced = result["latents"].set_index("plateifu").loc[normals["plateifu"], "recon_error"]
        by_snr = ", ".join(f"{v:.2f}" for v in reduced.groupby(terciles.to_numpy()).median())
        floors = list(result["learned_floor"].values())
        lines.append(
            f"| {variant} | {len(result['history'])} ({result['best_epoch']}) | "
            f"{result['train_seconds']:.0f} | {result['galaxies_per_second']:.1f} | "
            f"{q['chi2_model']:.3f} | {q['chi2_mean_map']:.3f} | {q['chi2_pca']:.3f} | "
            f"{q['fev']:.3f} [{q['fev_low']:.3f}, {q['fev_high']:.3f}] | {q['fev_pca']:.3f} | "
            f"{np.median(floors):.3f}, {max(floors):.3f} | {q['active_latent_dims']} | "
            f"{'pass' if q['passed'] else 'FAIL'} | "
            f"{reduced.median():.2f} ({by_snr}) |"
        )
    lines += ["", "Data-quality flags (`missing_line` planted vs the rest): "]
    for variant, (recall, false_rate) in flag_recall.items():
        lines.append(f"- {variant}: flagged {recall:.2f} of missing_line galaxies, "
                     f"{false_rate:.3f} of the others")  # fmt: skip
    lines += ["", "Validation by epoch: the typical galaxy's FEV (chi2 per pixel pooled):", ""]
    for variant, result in results.items():
        curve = ", ".join(
            f"{h['epoch']}: {h['val_fev']:.3f} ({h['val_chi2']:.3f})" for h in result["history"]
        )
        lines.append(f"- {variant}: {curve}")
    return "\n".join(lines) + "\n"


def _normals_by_class(ranked: pd.DataFrame, methods: dict, names: list[str]) -> str:
    """Held-out normal galaxies per BPT class: median combined score and rho(score, S/N) within
    the class. A pooled rho can come from classes of different depth being fitted differently
    rather than from depth itself."""
    from scipy.stats import spearmanr

    normal = (ranked["anomaly_kind"] == "none").to_numpy()
    classes = ranked.loc[normal, "bpt_class"].astype(str).to_numpy()
    snr = ranked.loc[normal, "snr_ha"].to_numpy()
    lines = [
        "",
        "### Normal galaxies by BPT class",
        "",
        "| class | galaxies | median H-alpha S/N | "
        + " | ".join(f"{name}: median score | rho(score, S/N)" for name in names)
        + " |",
        "|---|---|---|" + "---|---|" * len(names),
    ]
    for name in sorted(set(classes)):
        members = classes == name
        cells = []
        for method in names:
            score = methods[method][normal][members]
            rho = spearmanr(score, snr[members]).statistic if members.sum() > 2 else np.nan
            cells += [f"{np.median(score):.2f}", f"{rho:.3f}"]
        lines.append(
            f"| {name} | {int(members.sum())} | {np.median(snr[members]):.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
