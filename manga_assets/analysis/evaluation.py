"""How well anomaly scores and AGN flags recover what a synthetic release planted.

The truth table comes from the synthetic release: per galaxy its true ``bpt_class`` (sf,
composite, seyfert, liner or lineless), ``is_agn``, and ``anomaly_kind`` ('none', or the kind of
anomaly planted). Every metric is a float; one that is undefined because a class is absent (no
planted anomaly, no Seyfert, nothing flagged) is NaN rather than an error, so a small run still
reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRUTH_COLUMNS: tuple[str, ...] = ("plateifu", "bpt_class", "is_agn", "anomaly_kind")


def _fraction(hits: np.ndarray, among: np.ndarray) -> float:
    """Share of ``among`` that is also ``hits``; NaN when ``among`` is empty."""
    count = int(among.sum())
    return float((hits & among).sum() / count) if count else float("nan")


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for separating positives; NaN unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, score))


def bootstrap_auc_interval(
    is_positive: np.ndarray, score: np.ndarray, samples: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of the ROC AUC over galaxies resampled with replacement (NaN if undefined)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(samples):
        index = rng.integers(0, len(score), len(score))
        value = roc_auc(is_positive[index], score[index])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def precision_at_k(is_positive: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of positives among the ``k`` highest scores (stable order); NaN when k < 1."""
    if k < 1:
        return float("nan")
    top = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[:k]
    return float(np.asarray(is_positive, dtype=bool)[top].mean())


def evaluate(
    truth: pd.DataFrame,
    anomaly_scores: pd.DataFrame,
    agn_sample: pd.DataFrame,
    *,
    k: int | None = None,
) -> dict[str, float]:
    """Recovery metrics of planted anomalies and of AGN.

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
        - ``anomaly_auc``: ROC AUC of ``anomaly_score`` for planted (kind != 'none') vs none,
          and ``anomaly_auc_low``, ``anomaly_auc_high``: its bootstrap 95 % interval;
        - ``anomaly_precision_at_k``, ``anomaly_k``: share of planted among the k top scores;
        - ``seyfert_recall``: share of true Seyferts flagged ``is_agn``;
        - ``agn_precision``, ``agn_recall``: ``is_agn`` against the true ``is_agn``;
        - ``seyfert_precision``: share of galaxies classified ``seyfert`` that truly are;
        - ``bpt_agreement``: share of galaxies whose class matches the truth, a true 'lineless'
          matching a predicted 'invalid' (nothing to classify);
        - ``anomaly_auc_<kind>``: ROC AUC of each planted kind against the galaxies with 'none'.
        Undefined metrics are NaN.

    Raises
    ------
    ValueError
        If a table lacks a needed column.
    """
    for name, table, columns in (
        ("truth", truth, TRUTH_COLUMNS),
        ("anomaly_scores", anomaly_scores, ("plateifu", "anomaly_score")),
        ("agn_sample", agn_sample, ("plateifu", "bpt_class", "is_agn")),
    ):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks columns {missing!r}")

    merged = (
        truth.loc[:, list(TRUTH_COLUMNS)]
        .merge(anomaly_scores.loc[:, ["plateifu", "anomaly_score"]], on="plateifu")
        .merge(
            agn_sample.loc[:, ["plateifu", "bpt_class", "is_agn"]],
            on="plateifu",
            suffixes=("_true", "_pred"),
        )
    )
    planted = merged["anomaly_kind"].astype(str).str.lower().ne("none").to_numpy()
    score = merged["anomaly_score"].to_numpy(dtype=np.float64)
    true_class = merged["bpt_class_true"].astype(str).to_numpy()
    pred_class = merged["bpt_class_pred"].astype(str).to_numpy()
    true_agn = merged["is_agn_true"].astype(bool).to_numpy()
    pred_agn = merged["is_agn_pred"].astype(bool).to_numpy()
    true_seyfert = true_class == "seyfert"
    k = int(planted.sum()) if k is None else k

    kinds = sorted(set(merged["anomaly_kind"].astype(str).str.lower()) - {"none"})
    per_kind = {}
    for kind in kinds:
        # Each kind against the unremarkable galaxies only, so kinds do not mask one another.
        of_kind = merged["anomaly_kind"].astype(str).str.lower().eq(kind).to_numpy()
        keep = of_kind | ~planted
        per_kind[f"anomaly_auc_{kind}"] = roc_auc(of_kind[keep], score[keep])

    auc_low, auc_high = bootstrap_auc_interval(planted, score)
    matches = (true_class == pred_class) | ((true_class == "lineless") & (pred_class == "invalid"))
    return {
        "n_galaxies": float(len(merged)),
        "n_planted": float(planted.sum()),
        "n_seyfert": float(true_seyfert.sum()),
        "anomaly_auc": roc_auc(planted, score),
        "anomaly_auc_low": auc_low,
        "anomaly_auc_high": auc_high,
        "anomaly_precision_at_k": precision_at_k(planted, score, k),
        "anomaly_k": float(k),
        "seyfert_recall": _fraction(pred_agn, true_seyfert),
        "seyfert_precision": _fraction(true_seyfert, pred_class == "seyfert"),
        "agn_recall": _fraction(pred_agn, true_agn),
        "agn_precision": _fraction(true_agn, pred_agn),
        "bpt_agreement": float(matches.mean()) if len(merged) else float("nan"),
        **per_kind,
    }
