"""How anomalous each galaxy is, by three complementary scores and their combination.

- ``recon_error``: the autoencoder's reconstruction error of the galaxy. A galaxy unlike the
  training set is reconstructed poorly.
- ``knn_distance``: the mean Euclidean distance to the ``k`` nearest other galaxies in the
  standardised latent space. A galaxy far from every other one sits in an empty region.
- ``isolation_score``: the isolation-forest score of the latents (scikit-learn's ``score_samples``
  negated, seeded). A galaxy that random axis-aligned splits isolate quickly is unusual, even when
  it is close to a small group of similar oddities (where the k-NN distance is small).

Each score is turned into a percentile over the sample (0-100, 100 = highest, ties averaged) so that
scores with different units can be combined. ``anomaly_score`` is the mean of the three percentiles:
higher means more anomalous, and a galaxy must stand out on several scores to reach the top.
``rank`` orders galaxies by ``anomaly_score``, 1 = most anomalous (ties broken by plate-IFU).

When the table has per-line errors ``err_<line>``, ``worst_line`` names the line whose error is
highest relative to the sample (by percentile), a hint at *what* is unusual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from manga_assets.analysis.latent import latent_matrix, require_finite, standardise
from manga_assets.analysis.neighbours import nearest_others

SCORE_COLUMNS: tuple[str, ...] = ("recon_error", "knn_distance", "isolation_score")


def percentile(values: np.ndarray) -> np.ndarray:
    """Percentile rank of each value in ``values``, 0-100, ties averaged (highest = 100)."""
    return pd.Series(values).rank(method="average", pct=True).to_numpy() * 100.0


def knn_distance(matrix: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each row to its ``k`` nearest other rows (exact search).

    ``k`` is clipped to N - 1.
    """
    distance, _ = nearest_others(matrix, min(k, len(matrix) - 1))
    return distance.mean(axis=1)


def isolation_score(matrix: np.ndarray, n_estimators: int, seed: int) -> np.ndarray:
    """Isolation-forest score per row (negated ``score_samples``: higher = more isolated)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(matrix)
    return -forest.score_samples(matrix)


def _worst_line(latents: pd.DataFrame) -> np.ndarray | None:
    error_columns = [c for c in latents.columns if str(c).startswith("err_")]
    if not error_columns:
        return None
    per_line_percentile = latents[error_columns].rank(pct=True).to_numpy()
    # A galaxy whose per-line errors are all missing has no worst line.
    filled = np.nan_to_num(per_line_percentile, nan=-1.0)
    names = np.array([str(c)[len("err_") :] for c in error_columns], dtype=object)
    worst = names[filled.argmax(axis=1)]
    worst[(filled < 0).all(axis=1)] = ""
    return worst


def anomaly_scores(
    latents: pd.DataFrame,
    *,
    k: int = 10,
    n_estimators: int = 200,
    seed: int = 0,
    latent_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Anomaly scores, their percentiles, the combined score and the rank of every galaxy.

    Parameters
    ----------
    latents : DataFrame
        A latents table: ``plateifu``, latent columns ``z00``.., ``recon_error``, optionally
        ``err_<line>``.
    k : int, optional
        Neighbours averaged in ``knn_distance``, 10 by default (clipped to N - 1).
    n_estimators : int, optional
        Trees of the isolation forest, 200 by default.
    seed : int, optional
        Seed of the isolation forest, 0 by default.
    latent_columns : sequence of str, optional
        Latent columns to use; by default every ``z<digits>`` column.

    Returns
    -------
    DataFrame
        ``plateifu``; ``recon_error``, ``knn_distance``, ``isolation_score`` and each with a
        ``_pct`` percentile column; ``anomaly_score`` (mean of the percentiles, 0-100, higher =
        more anomalous); ``rank`` (1 = most anomalous); ``worst_line`` when per-line errors exist.
        Rows are in the input order.

    Raises
    ------
    ValueError
        If there are fewer than 2 galaxies, ``recon_error`` is missing, or a latent value or
        reconstruction error is NaN or infinite (the message names the galaxies).
    """
    plateifus, matrix = latent_matrix(latents, latent_columns)
    if len(plateifus) < 2:
        raise ValueError(f"anomaly scores need at least 2 galaxies, got {len(plateifus)}")
    if "recon_error" not in latents.columns:
        raise ValueError("latents table has no 'recon_error' column")
    recon_error = latents["recon_error"].to_numpy(dtype=np.float64)
    require_finite(recon_error, plateifus, "recon_error")

    scaled = standardise(matrix)
    scores = {
        "recon_error": recon_error,
        "knn_distance": knn_distance(scaled, k),
        "isolation_score": isolation_score(scaled, n_estimators, seed),
    }
    table = pd.DataFrame({"plateifu": plateifus})
    for name, values in scores.items():
        table[name] = values
        table[f"{name}_pct"] = percentile(values)
    table["anomaly_score"] = table[[f"{name}_pct" for name in SCORE_COLUMNS]].mean(axis=1)

    order = np.lexsort((plateifus, -table["anomaly_score"].to_numpy()))
    rank = np.empty(len(table), dtype=np.int64)
    rank[order] = np.arange(1, len(table) + 1)
    table["rank"] = rank

    worst = _worst_line(latents)
    if worst is not None:
        table["worst_line"] = worst
    return table
