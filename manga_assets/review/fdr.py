"""False-discovery-rate control of the anomaly lists (placeholder of the review core)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    n = p.size
    if n == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    q = np.empty(n)
    q[order] = q_sorted
    return q


def passing(scores: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """Rows of an anomaly-scores table discovered at false-discovery rate ``fdr``, most
    anomalous first, with ``p_value`` and ``q_value``."""
    table = scores.copy()
    table["p_value"] = 10.0 ** -table["anomaly_score"].to_numpy(dtype=np.float64)
    table["q_value"] = benjamini_hochberg(table["p_value"])
    table = table[table["q_value"] <= fdr]
    return table.sort_values(["q_value", "anomaly_score"], ascending=[True, False]).reset_index(
        drop=True
    )
