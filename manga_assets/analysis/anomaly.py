"""How anomalous each galaxy is, in units of its noise, and why.

A galaxy can be unusual in three ways, each measured by one component score:

- ``line_excess``: some line is reconstructed worse than its noise allows. Per line, the excess
  chi-square in noise units, ``(chi2 - N) / sqrt(2 N)`` over its N valid pixels; the galaxy's value
  is the largest over its lines. A noisy galaxy that the model reproduces to its noise scores about
  0 however noisy it is.
- ``coherent_residual``: the residual has structure. Per line, the peak of the residual map in noise
  units smoothed with a PSF-sized kernel (`manga_assets.model.inference.coherent_peaks`); white
  noise averages down, a ring, a second nucleus or a line whose morphology disagrees with the
  others does not.
- ``latent_density``: the galaxy sits where few others do. The mean distance to its ``k`` nearest
  neighbours in the whitened latent space, keeping the principal directions that carry 99 % of its
  variance (the active dimensions).

Each component is calibrated into a tail probability against the sample itself: a robust z-score
(median and MAD, which the few anomalies hardly move) turned into a one-sided Gaussian tail. The
noise-based components are calibrated within each bundle size (the IFU design's leading digits:
19 to 127 fibres), because a map of a small bundle spreads a few spaxels over many cells and
correlated noise then looks more coherent. ``anomaly_score`` is ``-log10`` of the smallest tail
probability times the number of components (Bonferroni): one strong signal is enough, and it is
not diluted by the components that see nothing. ``anomaly_component`` names the component that
decided, ``anomaly_line`` the line when it is a line's.

Data-quality artefacts are not physics and are not ranked: ``quality_flags`` lists, e.g., lines
that are invalid over most of the footprint where the other lines are valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from manga_assets.analysis.latent import latent_matrix, require_finite
from manga_assets.analysis.neighbours import nearest_others

COMPONENTS: tuple[str, ...] = ("line_excess", "coherent_residual", "latent_density")
# Share of the latent variance kept when whitening (the rest is numerical dust).
ACTIVE_VARIANCE = 0.99
# A line valid over less than this share of the galaxy's footprint is a data-quality artefact.
MIN_LINE_COVERAGE = 0.5
# Robust z-scores need a few galaxies per calibration group; smaller groups join the whole sample.
MIN_GROUP_SIZE = 20


def bundle_size(plateifu: str) -> int:
    """Fibres of the IFU bundle, from the IFU design (e.g. 8485-1901 -> 19, 7443-12701 -> 127)."""
    return int(str(plateifu).split("-")[1]) // 100


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 MAD): a z-score that the few outliers hardly move."""
    values = np.asarray(values, dtype=np.float64)
    median = np.nanmedian(values)
    spread = 1.4826 * np.nanmedian(np.abs(values - median))
    if not np.isfinite(spread) or spread <= 0:
        spread = np.nanstd(values) or 1.0
    return (values - median) / spread


def tail_probability(values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """One-sided Gaussian tail probability of each value's robust z-score within its group."""
    from scipy.stats import norm

    values = np.asarray(values, dtype=np.float64)
    z = robust_z(values)
    if groups is not None:
        for group in np.unique(groups):
            members = groups == group
            if members.sum() >= MIN_GROUP_SIZE:
                z[members] = robust_z(values[members])
    return norm.sf(z)


def line_excess(chi2: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """(chi2 - N) / sqrt(2 N) per galaxy and line; NaN where a line has no valid pixel."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_valid > 0, (chi2 - n_valid) / np.sqrt(2.0 * n_valid), np.nan)


def whitened_active(matrix: np.ndarray, keep: float = ACTIVE_VARIANCE) -> np.ndarray:
    """Latents rotated onto their principal axes, unit variance, keeping ``keep`` of the variance.

    Standardising each latent dimension would blow up the inactive ones (a VAE's collapsed
    dimensions carry only numerical noise) to the weight of the informative ones.
    """
    centred = matrix - matrix.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    if variance.sum() <= 0:
        return np.zeros((len(matrix), 1))
    n_active = int(np.searchsorted(np.cumsum(variance) / variance.sum(), keep) + 1)
    n_active = min(n_active, len(variance))
    scale = np.sqrt(variance[:n_active] / max(len(matrix) - 1, 1))
    return (centred @ axes[:n_active].T) / np.where(scale > 0, scale, 1.0)


def knn_distance(matrix: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each row to its ``k`` nearest other rows (k clipped to N - 1)."""
    distance, _ = nearest_others(matrix, min(k, len(matrix) - 1))
    return distance.mean(axis=1)


def _line_names(latents: pd.DataFrame, prefix: str) -> list[str]:
    return [str(c)[len(prefix) :] for c in latents.columns if str(c).startswith(prefix)]


def quality_flags(n_valid: np.ndarray, lines: Sequence[str]) -> list[str]:
    """Per galaxy, the lines invalid over most of the footprint, as 'line_missing:<line>;...'.

    The footprint is the most pixels any line of the galaxy has valid.
    """
    footprint = n_valid.max(axis=1, keepdims=True)
    short = (footprint > 0) & (n_valid < MIN_LINE_COVERAGE * footprint)
    return [
        ";".join(f"line_missing:{lines[i]}" for i in np.flatnonzero(row)) for row in short
    ]


def anomaly_scores(
    latents: pd.DataFrame,
    *,
    k: int = 10,
    latent_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Component scores, their tail probabilities, the combined score and the rank of every galaxy.

    Parameters
    ----------
    latents : DataFrame
        A latents table: ``plateifu``, latent columns ``z00``.., and per line ``chi2_<line>``,
        ``n_<line>`` (valid pixels) and ``peak_<line>`` (`manga_assets.model.inference`).
    k : int, optional
        Neighbours averaged in the latent density (default 10, clipped to N - 1).
    latent_columns : sequence of str, optional
        Latent columns to use; by default every ``z<digits>`` column.

    Returns
    -------
    DataFrame
        ``plateifu``; per component its value and ``p_<component>``; ``anomaly_score``
        (``-log10`` of the Bonferroni-corrected smallest tail probability, >= 0, higher = more
        anomalous); ``anomaly_component`` and ``anomaly_line`` (what decided); ``rank``
        (1 = most anomalous); ``quality_flags`` (data-quality artefacts, not ranked). Rows are in
        the input order.

    Raises
    ------
    ValueError
        If there are fewer than 2 galaxies, a per-line column is missing, or a latent value is
        NaN or infinite (the message names the galaxies).
    """
    plateifus, matrix = latent_matrix(latents, latent_columns)
    if len(plateifus) < 2:
        raise ValueError(f"anomaly scores need at least 2 galaxies, got {len(plateifus)}")
    lines = _line_names(latents, "chi2_")
    missing = [
        f"{prefix}{line}"
        for line in lines
        for prefix in ("n_", "peak_")
        if f"{prefix}{line}" not in latents.columns
    ]
    if not lines or missing:
        raise ValueError(
            f"the latents table lacks per-line columns ({missing or 'chi2_<line>'}); rebuild "
            f"the latents with this version of the pipeline"
        )
    chi2 = latents[[f"chi2_{line}" for line in lines]].to_numpy(dtype=np.float64)
    n_valid = latents[[f"n_{line}" for line in lines]].to_numpy(dtype=np.float64)
    peaks = latents[[f"peak_{line}" for line in lines]].to_numpy(dtype=np.float64)
    require_finite(chi2, plateifus, "per-line chi-square")

    excess = line_excess(chi2, n_valid)
    has_lines = np.isfinite(excess).any(axis=1)
    worst_excess = np.where(has_lines[:, None], np.nan_to_num(excess, nan=-np.inf), 0).argmax(1)
    rows = np.arange(len(plateifus))
    worst_peak = np.where(n_valid > 0, peaks, -np.inf).argmax(axis=1)
    components = {
        "line_excess": np.where(has_lines, excess[rows, worst_excess], 0.0),
        "coherent_residual": np.where(has_lines, peaks[rows, worst_peak], 0.0),
        "latent_density": knn_distance(whitened_active(matrix), k),
    }
    sizes = np.array([bundle_size(p) for p in plateifus])
    table = pd.DataFrame({"plateifu": plateifus})
    probabilities = []
    for name, values in components.items():
        groups = None if name == "latent_density" else sizes
        table[name] = values
        table[f"p_{name}"] = tail_probability(values, groups)
        probabilities.append(table[f"p_{name}"].to_numpy())
    stacked = np.clip(np.stack(probabilities, axis=1), 1e-300, 1.0)
    deciding = stacked.argmin(axis=1)
    corrected = np.minimum(stacked[rows, deciding] * len(COMPONENTS), 1.0)
    table["anomaly_score"] = -np.log10(corrected)
    table["anomaly_component"] = np.array(COMPONENTS, dtype=object)[deciding]
    line_of = {
        "line_excess": np.array(lines, dtype=object)[worst_excess],
        "coherent_residual": np.array(lines, dtype=object)[worst_peak],
    }
    table["anomaly_line"] = [
        line_of[component][i] if component in line_of else ""
        for i, component in enumerate(table["anomaly_component"])
    ]

    order = np.lexsort((plateifus, -table["anomaly_score"].to_numpy()))
    rank = np.empty(len(table), dtype=np.int64)
    rank[order] = np.arange(1, len(table) + 1)
    table["rank"] = rank
    table["quality_flags"] = quality_flags(n_valid, lines)
    return table
