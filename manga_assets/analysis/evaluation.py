"""How well anomaly scores and AGN flags recover what a synthetic release planted.

Every figure of recovery is defined here once; the report (:func:`evaluate`), the demo (which
prints the report's figures) and ``benchmarks/science.py`` (:func:`ranking_figures`,
:func:`normal_figures`, :func:`bootstrap_intervals`) all compute them with these functions.

The truth table comes from the synthetic release: per galaxy its true ``bpt_class`` (sf,
composite, seyfert, liner or lineless), ``is_agn``, and ``anomaly_kind`` ('none', or the kind of
anomaly planted). Every metric is a float; one that is undefined because a class is absent (no
planted anomaly, no Seyfert, nothing flagged) is NaN rather than an error, so a small run still
reports.

Two populations of positives are named apart, never both "AUC":

- **all planted anomalies** (``auc``, ``average_precision``, ...): every kind but 'none';
- **line-bearing anomalies** (``auc_line_bearing``, ...): without the data-quality kinds
  (:data:`DATA_QUALITY_KINDS`, a line's data removed), which the pipeline reports in
  ``quality_flags`` and does not rank as physics; those galaxies are left out of the ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

TRUTH_COLUMNS: tuple[str, ...] = ("plateifu", "bpt_class", "is_agn", "anomaly_kind")
# Planted anomalies that remove data rather than change the physics: flagged, not ranked.
DATA_QUALITY_KINDS: tuple[str, ...] = ("missing_line",)
LINE_BEARING = "_line_bearing"
# Shares of normal galaxies above these scores: an honest score s is passed by 10**-s of them.
CALIBRATION_LEVELS: tuple[int, ...] = (1, 2)
REPORT_BOOTSTRAP_SAMPLES = 200

Figures = Callable[[np.ndarray], dict[str, float]]


def _fraction(hits: np.ndarray, among: np.ndarray) -> float:
    """Share of ``among`` that is also ``hits``; NaN when ``among`` is empty."""
    count = int(among.sum())
    return float((hits & among).sum() / count) if count else float("nan")


def _both_classes(is_positive: np.ndarray) -> bool:
    return bool(is_positive.any() and not is_positive.all())


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for separating positives; NaN unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    is_positive = np.asarray(is_positive, dtype=bool)
    if not _both_classes(is_positive):
        return float("nan")
    return float(roc_auc_score(is_positive, score))


def average_precision(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision of ``score`` for ranking positives first; NaN unless both classes."""
    from sklearn.metrics import average_precision_score

    is_positive = np.asarray(is_positive, dtype=bool)
    if not _both_classes(is_positive):
        return float("nan")
    return float(average_precision_score(is_positive, score))


def precision_at_k(is_positive: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of positives among the ``k`` highest scores (stable order); NaN when k < 1.

    The one definition of precision: an inspection budget (a share of the sample,
    :func:`budget_k`) and the report's k (the number planted) are both a k here.
    """
    if k < 1:
        return float("nan")
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:k]
    return float(np.asarray(is_positive, dtype=bool)[top].mean())


def budget_k(share: float, n: int) -> int:
    """The k of an inspection budget: ``share`` of ``n`` galaxies, rounded, at least one."""
    return max(1, int(round(share * n)))


def budget_name(share: float) -> str:
    """``precision_at_1pct`` for a budget of 0.01."""
    return f"precision_at_{int(share * 100)}pct"


def line_bearing(kind: np.ndarray) -> np.ndarray:
    """True for the galaxies the ranking figures keep: not a data-quality kind."""
    return ~np.isin(np.asarray(kind, dtype=str), DATA_QUALITY_KINDS)


def ranking_figures(
    kind: Sequence[str] | np.ndarray,
    score: np.ndarray,
    *,
    k: int | None = None,
    budgets: Sequence[float] = (),
    line_bearing_only: bool = False,
) -> dict[str, float]:
    """How well ``score`` ranks the planted anomalies above the unremarkable galaxies.

    Parameters
    ----------
    kind : sequence of str
        Planted anomaly kind per galaxy ('none' for an unremarkable one), lower case.
    score : ndarray
        Higher = more anomalous.
    k : int, optional
        Adds ``precision_at_k``.
    budgets : sequence of float
        Shares of the sample inspected; adds ``precision_at_<percent>pct`` for each.
    line_bearing_only : bool
        Leave the data-quality kinds out first, and name every figure but the per-kind AUCs
        with the suffix ``_line_bearing``.

    Returns
    -------
    dict of str to float
        ``auc``, ``average_precision``, the precisions, and ``auc_<kind>``: each planted kind
        against the galaxies with 'none' only, so that kinds do not mask one another.
    """
    kind = np.asarray(kind, dtype=str)
    score = np.asarray(score, dtype=np.float64)
    suffix = ""
    if line_bearing_only:
        keep = line_bearing(kind)
        kind, score, suffix = kind[keep], score[keep], LINE_BEARING
    planted = kind != "none"
    figures = {
        f"auc{suffix}": roc_auc(planted, score),
        f"average_precision{suffix}": average_precision(planted, score),
    }
    if k is not None:
        figures[f"precision_at_k{suffix}"] = precision_at_k(planted, score, k)
    for share in budgets:
        figures[f"{budget_name(share)}{suffix}"] = precision_at_k(
            planted, score, budget_k(share, len(score))
        )
    for name in sorted(set(kind[planted])):
        of_kind = kind == name
        keep = of_kind | ~planted
        figures[f"auc_{name}"] = roc_auc(of_kind[keep], score[keep])
    return figures


def normal_figures(
    kind: Sequence[str] | np.ndarray,
    score: np.ndarray,
    snr: np.ndarray,
    levels: Sequence[int] = CALIBRATION_LEVELS,
) -> dict[str, float]:
    """How honest the score is among the unremarkable galaxies ('none').

    ``rho_snr_normals``: Spearman rho between the score and the median H-alpha S/N ``snr``
    (0 for a score blind to depth); ``normals_above_<level>``: share scoring above ``level``
    (10**-level for an honest score).
    """
    from scipy.stats import spearmanr

    normal = np.asarray(kind, dtype=str) == "none"
    score = np.asarray(score)
    figures = {"rho_snr_normals": float(spearmanr(score[normal], snr[normal]).statistic)}
    for level in levels:
        figures[f"normals_above_{level}"] = float((score[normal] > level).mean())
    return figures


def bootstrap_intervals(
    figures: Figures, n: int, samples: int, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Each figure with its bootstrap 95 % interval over ``n`` galaxies resampled with replacement.

    ``figures(index)`` computes the figures of the galaxies ``index``. Returns
    ``{name: (value on all galaxies, low, high)}``; a resample where a figure is undefined (NaN
    or absent) does not count, and a figure undefined in every resample has a NaN interval.
    """
    point = figures(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = [figures(rng.integers(0, n, n)) for _ in range(samples)]
    intervals = {}
    for name, value in point.items():
        values = [draw[name] for draw in draws if name in draw and np.isfinite(draw[name])]
        low, high = np.percentile(values, [2.5, 97.5]) if values else (np.nan, np.nan)
        intervals[name] = (float(value), float(low), float(high))
    return intervals


def bootstrap_auc_interval(
    is_positive: np.ndarray,
    score: np.ndarray,
    samples: int = REPORT_BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % interval of the ROC AUC over galaxies resampled with replacement (NaN if undefined)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    interval = bootstrap_intervals(
        lambda index: {"auc": roc_auc(is_positive[index], score[index])}, len(score), samples, seed
    )["auc"]
    return interval[1], interval[2]


def paired_auc_difference(
    first: np.ndarray, second: np.ndarray, is_positive: np.ndarray, samples: int, seed: int = 0
) -> tuple[float, float, float]:
    """AUC of ``first`` minus AUC of ``second`` on the same galaxies, with its paired bootstrap
    95 % interval: ``(difference, low, high)``."""
    is_positive = np.asarray(is_positive, dtype=bool)
    interval = bootstrap_intervals(
        lambda index: {
            "difference": roc_auc(is_positive[index], first[index])
            - roc_auc(is_positive[index], second[index])
        },
        len(is_positive),
        samples,
        seed,
    )
    return interval["difference"]


def _merged(truth: pd.DataFrame, anomaly_scores: pd.DataFrame, agn_sample: pd.DataFrame):
    """The galaxies of all three tables, with the true and the predicted class side by side."""
    for name, table, columns in (
        ("truth", truth, TRUTH_COLUMNS),
        ("anomaly_scores", anomaly_scores, ("plateifu", "anomaly_score")),
        ("agn_sample", agn_sample, ("plateifu", "bpt_class", "is_agn")),
    ):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks columns {missing!r}")
    return (
        truth.loc[:, list(TRUTH_COLUMNS)]
        .merge(anomaly_scores.loc[:, ["plateifu", "anomaly_score"]], on="plateifu")
        .merge(
            agn_sample.loc[:, ["plateifu", "bpt_class", "is_agn"]],
            on="plateifu",
            suffixes=("_true", "_pred"),
        )
    )


def _agn_figures(merged: pd.DataFrame) -> dict[str, float]:
    """Recovery of the true Seyferts and AGN by the AGN sample, and BPT agreement."""
    true_class = merged["bpt_class_true"].astype(str).to_numpy()
    pred_class = merged["bpt_class_pred"].astype(str).to_numpy()
    true_agn = merged["is_agn_true"].astype(bool).to_numpy()
    pred_agn = merged["is_agn_pred"].astype(bool).to_numpy()
    true_seyfert = true_class == "seyfert"
    matches = (true_class == pred_class) | ((true_class == "lineless") & (pred_class == "invalid"))
    return {
        "seyfert_recall": _fraction(pred_agn, true_seyfert),
        "seyfert_precision": _fraction(true_seyfert, pred_class == "seyfert"),
        "agn_recall": _fraction(pred_agn, true_agn),
        "agn_precision": _fraction(true_agn, pred_agn),
        "bpt_agreement": float(matches.mean()) if len(merged) else float("nan"),
    }


def evaluate(
    truth: pd.DataFrame,
    anomaly_scores: pd.DataFrame,
    agn_sample: pd.DataFrame,
    *,
    k: int | None = None,
) -> dict[str, float]:
    """Recovery metrics of planted anomalies and of AGN (the report's evaluation table).

    Parameters
    ----------
    truth : DataFrame
        :data:`TRUTH_COLUMNS`; ``bpt_class`` in sf/composite/seyfert/liner/lineless.
    anomaly_scores : DataFrame
        ``plateifu`` and ``anomaly_score`` (higher = more anomalous), as from
        :func:`~.anomaly.anomaly_scores`.
    agn_sample : DataFrame
        ``plateifu``, ``bpt_class``, ``is_agn``, as from :func:`~.agn.build_agn_sample`.
    k : int, optional
        Cut of ``anomaly_precision_at_k``; by default the number of planted anomalies (so a
        perfect ranking scores 1).

    Returns
    -------
    dict of str to float
        - ``n_galaxies``, ``n_planted``, ``n_seyfert``: galaxies in all three tables, planted
          anomalies and true Seyferts among them;
        - ``anomaly_auc``: ROC AUC of ``anomaly_score`` for all planted (kind != 'none') vs
          none, and ``anomaly_auc_low``, ``anomaly_auc_high``: its bootstrap 95 % interval;
        - ``anomaly_precision_at_k``, ``anomaly_k``: share of planted among the k top scores;
        - ``seyfert_recall``: share of true Seyferts flagged ``is_agn``;
        - ``agn_precision``, ``agn_recall``: ``is_agn`` against the true ``is_agn``;
        - ``seyfert_precision``: share of galaxies classified ``seyfert`` that truly are;
        - ``bpt_agreement``: share of galaxies whose class matches the truth, a true 'lineless'
          matching a predicted 'invalid' (nothing to classify);
        - ``anomaly_auc_<kind>``: ROC AUC of each planted kind against the galaxies with 'none';
        - ``anomaly_average_precision``: average precision of all planted anomalies;
        - ``anomaly_auc_line_bearing`` (with ``_low``, ``_high``) and
          ``anomaly_average_precision_line_bearing``: the same without the data-quality kinds
          (the benchmark's ranking figures).
        Undefined metrics are NaN.

    Raises
    ------
    ValueError
        If a table lacks a needed column.
    """
    merged = _merged(truth, anomaly_scores, agn_sample)
    kind = merged["anomaly_kind"].astype(str).str.lower().to_numpy()
    score = merged["anomaly_score"].to_numpy(dtype=np.float64)
    planted = kind != "none"
    k = int(planted.sum()) if k is None else k
    ranking = ranking_figures(kind, score, k=k)
    auc_low, auc_high = bootstrap_auc_interval(planted, score)
    kept = line_bearing(kind)
    bearing = ranking_figures(kind, score, line_bearing_only=True)
    bearing_low, bearing_high = bootstrap_auc_interval(planted[kept], score[kept])
    return {
        "n_galaxies": float(len(merged)),
        "n_planted": float(planted.sum()),
        "n_seyfert": float((merged["bpt_class_true"].astype(str) == "seyfert").sum()),
        "anomaly_auc": ranking["auc"],
        "anomaly_auc_low": auc_low,
        "anomaly_auc_high": auc_high,
        "anomaly_precision_at_k": ranking["precision_at_k"],
        "anomaly_k": float(k),
        **_agn_figures(merged),
        **{f"anomaly_{name}": value for name, value in ranking.items() if name.startswith("auc_")},
        "anomaly_average_precision": ranking["average_precision"],
        "anomaly_auc_line_bearing": bearing[f"auc{LINE_BEARING}"],
        "anomaly_auc_line_bearing_low": bearing_low,
        "anomaly_auc_line_bearing_high": bearing_high,
        "anomaly_average_precision_line_bearing": bearing[f"average_precision{LINE_BEARING}"],
    }
