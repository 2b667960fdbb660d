"""The review queue: the anomaly ranking, reordered by what a reviewer's labels say.

What an astronomer looks for is rarely the raw reconstruction error: one wants rings, another
every AGN, and each calls some anomalies boring. The queue learns that from their labels, as
Astronomaly (Lochner & Bassett 2021) and Protege (2024) do on images, in our own form:

- **Where a galaxy sits.** Two blocks of features, each scaled to unit mean square and then
  weighted (`BLOCK_WEIGHTS`): the whitened latents (principal axes carrying 99 % of the
  variance, each of unit variance), which say what the galaxy looks like; and its anomaly
  "kind" (`kind_features`): the rarity of each score component (``-log10 p_<component>``,
  capped) and which line decided, which say how it departs. Two rings share a deciding
  component and line even where their disks differ.
- **Predicted relevance.** A Gaussian-kernel regression of the labels (interesting = 1,
  not interesting or artefact = 0) with a Beta prior: ``r(x) = (a r0 + sum_i w_i y_i) / (a +
  sum_i w_i)``, ``w_i = exp(-d_i^2 / 2 h^2)``, where ``r0`` is the reviewer's overall rate of
  interesting labels (Laplace-smoothed), ``a`` = `PRIOR_WEIGHT` labels' worth, and ``h`` the
  sample's typical distance to its `BANDWIDTH_NEIGHBOURS`-th nearest galaxy. Far from every
  label ``r`` is ``r0``; near labels it is what they say.
- **Acquisition.** An optimistic relevance, ``r + EXPLORATION * sd`` with ``sd`` the Beta
  posterior's standard deviation: a region few labels have seen is worth a look (Protege's
  uncertainty-driven acquisition), one that many labels call boring is not.
- **Priority.** In decades of odds: ``priority = anomaly_score + LABEL_WEIGHT * (logit10
  r_opt(x) - logit10 r_opt(far))``. ``anomaly_score`` is ``-log10`` of a calibrated p-value,
  a prior log-odds that the galaxy departs from normal; the label term is the log-odds that a
  departure like this one interests this reviewer, relative to one no label has seen. Unlike
  Astronomaly's trained score (the anomaly score times a factor of at most one) it can lift a
  moderately anomalous galaxy of a wanted kind above a very anomalous boring one, not only
  push boring ones down.

With no labels the priority is the anomaly score and the queue is the anomaly ranking, exactly
(ties and galaxies of equal score in ``rank`` order). Labelled galaxies leave the queue.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manga_assets.review.fdr import with_fdr

# Labels that count as "wanted"; the others ("not_interesting", "artefact") count as unwanted.
WANTED = ("interesting",)
# Relative weight of the two feature blocks in the squared distance.
BLOCK_WEIGHTS = {"latent": 1.0, "kind": 1.0, "profile": 1.0}
# Per-line robust z-scores of the residual profile count up to this many.
PROFILE_CAP = 10.0
# Share of the latent variance kept when whitening (the rest is numerical dust).
ACTIVE_VARIANCE = 0.99
# Rarity of a score component counts up to this many decades: beyond, all are equally extreme.
RARITY_CAP = 6.0
# Weight of the deciding line's one-hot within the kind block, against the rarities.
LINE_WEIGHT = 1.0
# The kernel's width: the sample's median distance to its this-many-th nearest galaxy.
BANDWIDTH_NEIGHBOURS = 10
# At most this many galaxies estimate the bandwidth (a brute-force search on a sample of them).
BANDWIDTH_SAMPLE = 2000
# The Beta prior's strength, in labels' worth: a galaxy needs about this much kernel weight
# from labels before they outweigh the reviewer's overall rate.
PRIOR_WEIGHT = 0.3
# Standard deviations of optimism in the acquisition (0: pure exploitation).
EXPLORATION = 0.5
# Decades of priority per decade of odds of relevance.
LABEL_WEIGHT = 2.0
# Relevance is kept this far from 0 and 1, so no label moves a galaxy without bound.
RELEVANCE_FLOOR = 1e-3

QUEUE_COLUMNS = (
    "plateifu", "queue_rank", "priority", "relevance", "relevance_sd", "anomaly_score",
    "p_value", "q_value", "rank", "anomaly_component", "anomaly_line",
)  # fmt: skip


@dataclass(frozen=True)
class ReviewSpace:
    """The galaxies a queue ranks (in anomaly rank order) and where each sits."""

    table: pd.DataFrame
    features: np.ndarray
    bandwidth: float


def whitened(matrix: np.ndarray, keep: float = ACTIVE_VARIANCE) -> np.ndarray:
    """Rows projected on the principal axes carrying ``keep`` of the variance, each scaled to
    unit variance."""
    centred = matrix - matrix.mean(axis=0)
    if len(matrix) < 2:
        return np.zeros((len(matrix), 1))
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    if variance.sum() <= 0:
        return np.zeros((len(matrix), 1))
    n_active = min(int(np.searchsorted(np.cumsum(variance) / variance.sum(), keep) + 1),
                   len(variance))  # fmt: skip
    scale = np.sqrt(variance[:n_active] / (len(matrix) - 1))
    return (centred @ axes[:n_active].T) / np.where(scale > 0, scale, 1.0)


def kind_features(scores: pd.DataFrame) -> np.ndarray:
    """How each galaxy departs: per score component its rarity (``-log10 p``, capped at
    `RARITY_CAP`), and a one-hot of the deciding line (`LINE_WEIGHT` each)."""
    rarity_columns = [c for c in scores.columns if str(c).startswith("p_") and c != "p_value"]
    blocks = []
    if rarity_columns:
        p = scores[rarity_columns].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore"):
            rarity = np.clip(-np.log10(np.nan_to_num(p, nan=1.0)), 0.0, RARITY_CAP)
        blocks.append(rarity)
    if "anomaly_line" in scores.columns:
        line = scores["anomaly_line"].fillna("").astype(str)
        named = sorted(set(line) - {""})
        if named:
            one_hot = (line.to_numpy()[:, None] == np.array(named)[None, :]).astype(float)
            blocks.append(LINE_WEIGHT * one_hot)
    if not blocks:
        return np.zeros((len(scores), 0))
    return np.hstack(blocks)


def residual_profile(latents: pd.DataFrame) -> np.ndarray:
    """Where in the spectrum a galaxy departs: per line, robust z-scores over the sample of its
    reduced chi-square relative to its other lines, its coherent residual peak and its extended
    residual (the latents table's ``chi2_``, ``n_``, ``peak_`` and ``extended_`` columns),
    clipped at `PROFILE_CAP`. A table without them gives no columns."""
    lines = [str(c)[5:] for c in latents.columns if str(c).startswith("chi2_")]
    needed = [f"{prefix}{line}" for line in lines for prefix in ("n_", "peak_", "extended_")]
    if not lines or not set(needed) <= set(latents.columns):
        return np.zeros((len(latents), 0))

    def columns(prefix: str) -> np.ndarray:
        return latents[[f"{prefix}{line}" for line in lines]].to_numpy(dtype=np.float64)

    valid = columns("n_") > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        reduced = np.log(np.maximum(columns("chi2_"), 1e-3) / np.maximum(columns("n_"), 1))
        reduced = np.where(valid, reduced, np.nan)
        relative = reduced - np.nanmedian(reduced, axis=1, keepdims=True)
    blocks = []
    for values in (relative, np.where(valid, columns("peak_"), np.nan),
                   np.where(valid, columns("extended_"), np.nan)):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a line without data anywhere
            median = np.nanmedian(values, axis=0)
            spread = 1.4826 * np.nanmedian(np.abs(values - median), axis=0)
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        z = np.clip((values - np.nan_to_num(median)) / spread, -PROFILE_CAP, PROFILE_CAP)
        blocks.append(_unit_mean_square(np.nan_to_num(z)))
    return np.hstack(blocks)


def _unit_mean_square(block: np.ndarray) -> np.ndarray:
    """``block`` centred and scaled so that its rows' mean squared norm is 1."""
    if block.shape[1] == 0:
        return block
    centred = block - block.mean(axis=0)
    norm = math.sqrt(float((centred**2).sum(axis=1).mean()))
    return centred / norm if norm > 0 else centred


def kernel_bandwidth(features: np.ndarray, k: int = BANDWIDTH_NEIGHBOURS) -> float:
    """The median distance of the galaxies to their ``k``-th nearest other galaxy (on an even
    sample of at most `BANDWIDTH_SAMPLE`)."""
    n = len(features)
    if n < 2:
        return 1.0
    sample = features[np.linspace(0, n - 1, min(n, BANDWIDTH_SAMPLE)).astype(int)]
    squared = (sample**2).sum(axis=1)
    distance = np.sqrt(
        np.maximum(squared[:, None] + squared[None, :] - 2 * sample @ sample.T, 0.0)
    )
    np.fill_diagonal(distance, np.inf)
    kth = np.sort(distance, axis=1)[:, min(k, len(sample) - 1) - 1]
    bandwidth = float(np.median(kth[np.isfinite(kth)])) if np.isfinite(kth).any() else 1.0
    return bandwidth if bandwidth > 0 else 1.0


def review_space(latents: pd.DataFrame, scores: pd.DataFrame) -> ReviewSpace:
    """The galaxies of both tables, in anomaly rank order, with their features.

    Raises
    ------
    ValueError
        If the tables share no galaxy, or the scores lack ``plateifu``, ``anomaly_score`` or
        ``rank``.
    """
    from manga_assets.analysis.latent import latent_columns

    missing = {"plateifu", "anomaly_score", "rank"} - set(scores.columns)
    if missing:
        raise ValueError(
            f"the anomaly_scores table lacks {sorted(missing)}; rebuild it with this pipeline"
        )
    columns = latent_columns(latents)
    table = scores if "q_value" in scores.columns else with_fdr(scores)
    table = table.merge(
        latents, on="plateifu", how="inner", validate="one_to_one", suffixes=("", "_latent")
    )
    if table.empty:
        raise ValueError(
            "the latents and anomaly_scores tables share no galaxy; are they of the same model?"
        )
    table = table.sort_values(["rank", "plateifu"], kind="stable").reset_index(drop=True)
    latent = whitened(np.nan_to_num(table[columns].to_numpy(dtype=np.float64)))
    blocks = [
        math.sqrt(BLOCK_WEIGHTS["latent"]) * _unit_mean_square(latent),
        math.sqrt(BLOCK_WEIGHTS["kind"]) * _unit_mean_square(kind_features(table)),
        math.sqrt(BLOCK_WEIGHTS["profile"]) * _unit_mean_square(residual_profile(table)),
    ]
    features = np.hstack(blocks)
    table = table[[c for c in table.columns if c in scores.columns or c in ("p_value", "q_value")]]
    return ReviewSpace(table.reset_index(drop=True), features, kernel_bandwidth(features))


def _logit10(r: np.ndarray | float) -> np.ndarray | float:
    return np.log10(r) - np.log10(1.0 - r)


def relevance(
    space: ReviewSpace, labelled: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per galaxy of ``space``: the posterior mean relevance, its standard deviation, and the
    prior mean ``r0`` (the relevance far from every label).

    ``labelled`` are row indices of ``space`` with labels, ``wanted`` whether each is wanted.
    """
    wanted = np.asarray(wanted, dtype=np.float64)
    r0 = (1.0 + wanted.sum()) / (2.0 + len(wanted))
    if len(labelled) == 0:
        n = len(space.features)
        sd = math.sqrt(r0 * (1 - r0) / (PRIOR_WEIGHT + 1))
        return np.full(n, r0), np.full(n, sd), r0
    at = space.features[labelled]
    squared = (
        (space.features**2).sum(axis=1)[:, None]
        + (at**2).sum(axis=1)[None, :]
        - 2 * space.features @ at.T
    )
    weight = np.exp(-np.maximum(squared, 0.0) / (2 * space.bandwidth**2))
    total = weight.sum(axis=1)
    mean = (PRIOR_WEIGHT * r0 + weight @ wanted) / (PRIOR_WEIGHT + total)
    sd = np.sqrt(mean * (1 - mean) / (PRIOR_WEIGHT + total + 1))
    return mean, sd, r0


def rank_queue(space: ReviewSpace, labels: pd.DataFrame) -> pd.DataFrame:
    """The unlabelled galaxies of ``space``, best first (see the module docstring).

    ``labels`` has ``plateifu`` and ``label``; a galaxy labelled more than once counts by its
    last row (highest ``id`` where given). Labels of galaxies not in ``space`` are ignored.
    """
    table = space.table
    latest = _latest(labels)
    row_of = pd.Series(np.arange(len(table)), index=table["plateifu"])
    latest = latest[latest["plateifu"].isin(row_of.index)]
    labelled = row_of.loc[latest["plateifu"]].to_numpy()
    wanted = latest["label"].isin(WANTED).to_numpy()
    mean, sd, r0 = relevance(space, labelled, wanted)
    score = table["anomaly_score"].to_numpy(dtype=np.float64)
    if len(labelled) == 0:
        priority = score.copy()
    else:
        optimistic = np.clip(mean + EXPLORATION * sd, RELEVANCE_FLOOR, 1 - RELEVANCE_FLOOR)
        far_sd = math.sqrt(r0 * (1 - r0) / (PRIOR_WEIGHT + 1))
        far = min(max(r0 + EXPLORATION * far_sd, RELEVANCE_FLOOR), 1 - RELEVANCE_FLOOR)
        priority = score + LABEL_WEIGHT * (_logit10(optimistic) - _logit10(far))
    queue = table.assign(priority=priority, relevance=mean, relevance_sd=sd)
    keep = np.ones(len(table), dtype=bool)
    keep[labelled] = False
    queue = queue[keep]
    if len(labelled) == 0:
        # The anomaly ranking itself: the scores are monotone in rank, but ties and rounding
        # must not reorder it.
        order = np.arange(len(queue))
    else:
        order = np.lexsort((queue["rank"].to_numpy(), -queue["priority"].to_numpy()))
    queue = queue.iloc[order].reset_index(drop=True)
    queue.insert(1, "queue_rank", np.arange(1, len(queue) + 1, dtype=np.int64))
    first = [c for c in QUEUE_COLUMNS if c in queue.columns]
    return queue[first + [c for c in queue.columns if c not in first]]


def _latest(labels: pd.DataFrame) -> pd.DataFrame:
    if labels is None or labels.empty:
        return pd.DataFrame({"plateifu": pd.Series(dtype=object), "label": pd.Series(dtype=object)})
    missing = {"plateifu", "label"} - set(labels.columns)
    if missing:
        raise ValueError(f"the labels table lacks {sorted(missing)}; pass LabelStore.current()")
    ordered = labels.sort_values("id", kind="stable") if "id" in labels.columns else labels
    return ordered.drop_duplicates("plateifu", keep="last")[["plateifu", "label"]]


def review_queue(
    latents: pd.DataFrame,
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    reviewer: str | None = None,
) -> pd.DataFrame:
    """Every galaxy ``reviewer`` has not labelled, best first.

    Parameters
    ----------
    latents : DataFrame
        The model's latents table (``plateifu`` and ``z*`` columns).
    scores : DataFrame
        The model's anomaly_scores table (``plateifu``, ``anomaly_score``, ``rank``, the
        ``p_<component>`` columns and ``anomaly_line``).
    labels : DataFrame
        Labels (`LabelStore.current` rows: ``plateifu``, ``label``, ``reviewer``, ``id``).
    reviewer : str, optional
        Only this reviewer's labels count (default: all rows given).

    Returns
    -------
    DataFrame
        ``plateifu``, ``queue_rank`` (1 = next), ``priority``, ``relevance`` and
        ``relevance_sd`` (predicted from the labels), ``anomaly_score``, ``p_value``,
        ``q_value``, ``rank`` (the anomaly ranking's), ``anomaly_component``,
        ``anomaly_line`` and the other score columns. With no labels, the order of ``rank``.
    """
    if reviewer is not None and labels is not None and not labels.empty:
        if "reviewer" not in labels.columns:
            raise ValueError("the labels table has no 'reviewer' column to select reviewer by")
        labels = labels[labels["reviewer"] == reviewer]
    return rank_queue(review_space(latents, scores), labels)
