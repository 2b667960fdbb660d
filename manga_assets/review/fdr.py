"""p-values, Benjamini-Hochberg q-values and the list that passes a false-discovery rate.

``anomaly_score`` (`manga_assets.analysis.anomaly`) is ``-log10`` of a p-value calibrated
against normal galaxies like each one, so ``p_value = 10 ** -anomaly_score``. The q-value of a
galaxy is the smallest false-discovery rate at which Benjamini-Hochberg would report it, so the
list at rate ``q`` is the galaxies with ``q_value <= q``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FDR_COLUMNS = ("p_value", "q_value")


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order.

    ``q_i = min_{j: p_j >= p_i} min(1, n p_j / rank_j)``. NaN p-values get a NaN q and do not
    count among the ``n`` tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return q
    if (p[finite] < 0).any() or (p[finite] > 1).any():
        raise ValueError(
            f"p-values must lie in [0, 1]; got values from {p[finite].min()} to "
            f"{p[finite].max()}"
        )
    order = finite[np.argsort(p[finite], kind="stable")]
    n = order.size
    adjusted = p[order] * n / np.arange(1, n + 1)
    # Step-up: a p-value's q is the smallest adjusted value at or beyond its rank.
    adjusted = np.minimum.accumulate(adjusted[::-1])[::-1]
    q[order] = np.minimum(adjusted, 1.0)
    return q


def with_fdr(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` (an anomaly_scores table) with ``p_value`` and ``q_value`` added (a copy).

    Raises
    ------
    ValueError
        If the table has no ``anomaly_score`` column.
    """
    if "anomaly_score" not in scores.columns:
        raise ValueError(
            f"an anomaly_scores table needs an 'anomaly_score' column to give p-values; "
            f"columns are {list(scores.columns)!r}"
        )
    table = scores.copy()
    score = table["anomaly_score"].to_numpy(dtype=np.float64)
    table["p_value"] = np.minimum(10.0 ** -np.maximum(score, 0.0), 1.0)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return table


def passing(scores: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """The galaxies of ``scores`` reported at false-discovery rate ``fdr``, best first.

    ``q_value`` is computed from ``anomaly_score`` where the table lacks it. Best first is by
    the anomaly ranking (``rank``) where the table has one, else by p-value.

    Raises
    ------
    ValueError
        If ``fdr`` is not in (0, 1].
    """
    if not 0 < fdr <= 1:
        raise ValueError(f"the false-discovery rate must lie in (0, 1], got {fdr}")
    table = scores if "q_value" in scores.columns else with_fdr(scores)
    chosen = table[table["q_value"] <= fdr]
    by = ["rank"] if "rank" in chosen.columns else ["p_value", "plateifu"]
    return chosen.sort_values(by, kind="stable").reset_index(drop=True)
