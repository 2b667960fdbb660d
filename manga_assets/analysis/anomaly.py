"""How anomalous each galaxy is, in units of its noise, and why.

A galaxy can be unusual in six ways, each measured by one component score:

- ``line_excess``: one line is reconstructed worse than the galaxy's other lines. Per line, the
  log of its reduced chi-square less the median over the galaxy's other lines; a line whose map
  disagrees with the rest (another morphology, a garbled map, an unusual strength) stands out,
  while a galaxy that is simply deep, and so fitted worse in every line, does not.
- ``galaxy_excess``: the whole galaxy is reconstructed worse than galaxies observed as deep
  (its log reduced chi-square, less a trend in depth fitted over the sample).
- ``coherent_residual``: the residual has structure. Per line, the peak of the residual map in
  noise units smoothed with a PSF-sized kernel, with the model's systematic floor counted once
  over the kernel (`manga_assets.model.inference.coherent_peaks`): white noise averages down, a
  ring or a second nucleus does not, and a bright nucleus missed by a few per cent stays ordinary.
- ``extended_residual``: a line is brighter or fainter than the model over the whole galaxy. Per
  line, the residual summed over the footprint in noise units, with the model's systematic floor
  counted once over the galaxy (`manga_assets.model.inference.extended_residuals`): a line the
  model leaves out, too faint per spaxel to make a peak (HeII across a whole disk), adds up,
  while a deep galaxy's few-per-cent misfit of a bright line does not.
- ``latent_density``: the galaxy sits where few others do. The mean distance to its ``k``
  nearest neighbours in the whitened latent space, keeping the principal directions that carry
  99 % of its variance (the active dimensions).
- ``line_absence``: the galaxy has no line emission where the sample has. Its H-alpha flux summed
  over the footprint is not detected (S/N below 5); its tail probability is the larger of the
  share of other undetected galaxies and how far below the detected galaxies' log S/N it lies
  (`absence_probability`): in a sample of emitters a lineless galaxy stands out, in a survey
  where a third of the galaxies are passive it does not. A galaxy observed shallowly but with
  emission still sums to a clear detection, so noise alone does not make it lineless.

Every component is first standardised on the sample itself, against comparison galaxies: the
`COMPARISON_SIZE` (100) galaxies nearest in depth (the median H-alpha S/N per pixel) within
the galaxy's calibration class. A model misses more, in units of the noise, in a deep galaxy
than in a shallow one, and depth alone must not make a galaxy anomalous; a sliding window in
depth follows that trend where fixed depth bins leave it inside each bin. The classes are
``calibration_classes`` when given (e.g. each galaxy's measured BPT class: a model that
reproduces LINER nuclei worse than star-forming disks then does not rank every LINER as
anomalous), else the whole sample (benchmarks/SCIENCE.md measures both). Per-line
values are first turned into robust z-scores per line (median and MAD, which the few anomalies
hardly move), since lines differ in how well they are fitted; a galaxy's value is its largest
over lines (of the absolute value for the signed ``extended_residual``), and its model tail
probability that of the largest of as many standard normal values; the other components get a
one-sided Gaussian tail probability of their robust z-score.

Those model probabilities rank well but do not mean what they say: normal galaxies' misfits
have much heavier tails than Gaussian. ``-log10`` of each is kept as the component's ranking
statistic and calibrated against a reference of galaxies (``reference``, by default the
sample itself), pooled over calibration groups: ``p_<component>`` is the conformal p-value
(Bates et al. 2023) where at least `MIN_EXCEEDANCES` reference galaxies are as extreme, and
beyond, a straight line in log p fitted on the body of the reference, so a galaxy rarer than
every reference galaxy keeps gaining with its rarity. Reference galaxies beyond what that line
allows in a sample this large are anomalies of the reference and are not counted.
``line_absence`` is already such a probability (the share of undetected galaxies, then a fitted
tail). The combined statistic (`combined_rarity`) asks two views of the residual to agree: the
product of the two smallest residual p-values, or the absence's p where smaller. A normal
galaxy the model misfits tends to be rare in one view, a real departure in two; one view far
beyond the sample still decides alone. ``anomaly_score`` is ``-log10`` of that statistic
calibrated itself the same way (conformal body, fitted tail), so that among normal galaxies
about 10 % score above 1 and 1 % above 2. Samples too small for fitted tails (under
`MIN_TAIL_REFERENCE`) combine by the smallest p instead. The reference is the sample
itself by default, anomalies included: its discoveries at a false-discovery rate of 10 %
(Benjamini-Hochberg on these p-values) leave it before the final calibration. Anomalies of
moderate rarity stay in it and make the scores a little conservative. ``anomaly_component``
names the component that decided, ``anomaly_line`` the line when it is a line's.

Data-quality artefacts are not physics and are not ranked: ``quality_flags`` lists lines that
are invalid over most of the footprint where the other lines are valid.

The galaxies are scored by the model that was trained on most of them (the validation split
excepted): scoring out of fold would mean training one model per fold, k times the training
cost. A 32-number latent cannot memorise a galaxy's anomaly, and the benchmark
(``benchmarks/science.py``) measures the scores on plates the model never saw.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from manga_assets.analysis.latent import latent_matrix, require_finite
from manga_assets.analysis.neighbours import nearest_others

COMPONENTS: tuple[str, ...] = (
    "line_excess", "galaxy_excess", "coherent_residual", "extended_residual", "latent_density",
    "line_absence",
)  # fmt: skip
# Integrated H-alpha S/N below which a galaxy has no detected line emission.
DETECTION_SNR = 5.0
# Share of the latent variance kept when whitening (the rest is numerical dust).
ACTIVE_VARIANCE = 0.99
# A line valid over less than this share of the galaxy's footprint is a data-quality artefact.
MIN_LINE_COVERAGE = 0.5
# Robust z-scores need a few galaxies per calibration group; smaller groups join the whole sample.
MIN_GROUP_SIZE = 20
# Each galaxy's statistics are compared with this many galaxies of its group nearest in depth.
COMPARISON_SIZE = 100
# The residual components that must agree: the combined statistic multiplies this many of the
# smallest p-values.
AGREEING_COMPONENTS = 2
# A value with at least this many reference galaxies as extreme gets its conformal p-value;
# beyond, the reference is too thin to count and a fitted tail takes over.
MIN_EXCEEDANCES = 10
# Below this many reference galaxies no tail is fitted: a galaxy rarer than all of them is 1 in n.
MIN_TAIL_REFERENCE = 200
# Below this many reference galaxies nothing is calibrated: the model probabilities stand.
MIN_REFERENCE = 2 * MIN_EXCEEDANCES
# The body of the reference, on which its tail is fitted: its few anomalies hardly move it.
BODY_QUANTILES = (0.5, 0.9)
# A reference galaxy expected fewer than this many times among as many normal galaxies is an
# anomaly of the reference, and is set aside.
OUTLIER_EXPECTATION = 0.001
# Slowest tail (decades of probability per decade of rarity): keeps the map strictly falling.
MIN_TAIL_SLOPE = 0.05
# The reference's own discoveries at this false-discovery rate leave it before the final
# calibration (see `anomaly_scores`).
DISCOVERY_FDR = 0.1


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 MAD): a z-score that the few outliers hardly move."""
    values = np.asarray(values, dtype=np.float64)
    median = np.nanmedian(values)
    spread = 1.4826 * np.nanmedian(np.abs(values - median))
    if not np.isfinite(spread) or spread <= 0:
        spread = np.nanstd(values) or 1.0
    return (values - median) / spread


def nearest_in_depth_z(values: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Robust z-score of each value among the `COMPARISON_SIZE` galaxies nearest in depth
    (itself included): a sliding window over the galaxies sorted by depth."""
    n = len(values)
    size = min(COMPARISON_SIZE, n)
    order = np.argsort(np.nan_to_num(depth), kind="stable")
    windows = sliding_window_view(values[order], size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window
        median = np.nanmedian(windows, axis=1)
        spread = 1.4826 * np.nanmedian(np.abs(windows - median[:, None]), axis=1)
        fallback = np.nanstd(windows, axis=1)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, fallback)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
    # Each galaxy sits mid-window, or as near the middle as the ends of the depth range allow.
    start = np.clip(np.arange(n) - size // 2, 0, n - size)
    z = np.empty(n)
    z[order] = (values[order] - median[start]) / spread[start]
    return z


def comparison_z(
    values: np.ndarray, groups: np.ndarray | None = None, depth: np.ndarray | None = None
) -> np.ndarray:
    """Robust z-score of each value against its comparison galaxies: those of its group (the
    whole sample for groups under `MIN_GROUP_SIZE`), and among them, given ``depth``, the
    `COMPARISON_SIZE` nearest in depth."""
    values = np.asarray(values, dtype=np.float64)
    z = robust_z(values)
    labels = np.zeros(len(values), dtype=int) if groups is None else np.asarray(groups)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < MIN_GROUP_SIZE:
            continue
        if depth is None:
            z[members] = robust_z(values[members])
        else:
            z[members] = nearest_in_depth_z(values[members], np.asarray(depth)[members])
    return z


def worst_line(
    per_line: np.ndarray,
    groups: np.ndarray | None,
    depth: np.ndarray | None,
    two_sided: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per galaxy, the largest per-line robust z-score against its comparison galaxies
    (`comparison_z`, per line), its line index and the number of lines with data.

    With ``two_sided``, the largest |z|: a line too faint counts as much as one too bright.
    NaN entries (lines without data) are skipped; a galaxy without any line gets 0 and index 0.
    """
    z = np.column_stack(
        [
            np.where(
                np.isfinite(column),
                comparison_z(np.nan_to_num(column, nan=np.nanmedian(column)), groups, depth),
                np.nan,
            )
            if np.isfinite(column).any()
            else np.full(len(column), np.nan)
            for column in per_line.T
        ]
    )
    if two_sided:
        z = np.abs(z)
    filled = np.nan_to_num(z, nan=-np.inf)
    index = filled.argmax(axis=1)
    best = filled[np.arange(len(z)), index]
    return np.where(np.isfinite(best), best, 0.0), index, np.isfinite(z).sum(axis=1)


def depth_residual(values: np.ndarray, depth: np.ndarray | None) -> np.ndarray:
    """``values`` less a quadratic trend in log depth, fitted with outliers clipped.

    A galaxy's comparison galaxies span a range of depth (all of a small class), and within it
    the deepest are fitted worst in noise units: the trend is removed explicitly, in samples of
    any size the robust scores accept (`MIN_GROUP_SIZE`), since a small sample's deepest galaxy
    has no comparison galaxies as deep.
    """
    if depth is None or len(values) < MIN_GROUP_SIZE:
        return values
    log_depth = np.log10(np.maximum(depth, 1e-3))
    keep = np.isfinite(values)
    for _ in range(3):
        coefficients = np.polyfit(log_depth[keep], values[keep], 2)
        residual = values - np.polyval(coefficients, log_depth)
        keep = np.abs(robust_z(residual)) < 3
    return residual


def max_tail_probability(
    largest_z: np.ndarray, n_lines: np.ndarray, two_sided: bool = False
) -> np.ndarray:
    """Probability that the largest of ``n_lines`` standard normal z-scores (or, with
    ``two_sided``, of their absolute values) is this large."""
    from scipy.stats import norm

    n = np.maximum(n_lines, 1)
    if two_sided:
        return -np.expm1(n * np.log1p(-2.0 * norm.sf(np.maximum(largest_z, 0.0))))
    return -np.expm1(n * norm.logcdf(largest_z))


def model_rarity(
    z: np.ndarray, n_lines: np.ndarray | None = None, two_sided: bool = False
) -> np.ndarray:
    """``-log10`` of the model tail probability of a robust z-score (Gaussian, or with
    ``n_lines`` the largest of as many), in decades, without underflow far in the tail.

    This is the ranking statistic of a component: calibration maps it monotonically.
    """
    from scipy.stats import norm

    z = np.nan_to_num(np.asarray(z, dtype=np.float64))
    if n_lines is None:
        return -norm.logsf(z) / math.log(10)
    with np.errstate(divide="ignore"):
        probability = max_tail_probability(z, n_lines, two_sided)
        # Far in the tail the largest of n is n times one tail (twice for |z|): same, in logs.
        far = np.log10(np.maximum(n_lines, 1) * (2.0 if two_sided else 1.0)) + norm.logsf(
            np.abs(z) if two_sided else z
        ) / math.log(10)
        return -np.where(probability > 1e-200, np.log10(probability), far)


def survival_slope(statistic: np.ndarray, log10_survival: np.ndarray) -> float | None:
    """Least-squares decades of survival lost per decade of rarity (None where tied)."""
    if np.ptp(statistic) <= 0:
        return None
    return float(-np.polyfit(statistic, log10_survival, 1)[0])


def body_slope(ordered: np.ndarray) -> float | None:
    """Tail slope read on the body of the reference (quantiles `BODY_QUANTILES`)."""
    quantiles = np.linspace(*BODY_QUANTILES, 9)
    return survival_slope(np.quantile(ordered, quantiles), np.log10(1 - quantiles))


def typical_reference(reference: np.ndarray) -> np.ndarray:
    """The reference less the galaxies that its body's tail says no normal sample this large
    would hold (an expected count below `OUTLIER_EXPECTATION`), sorted.

    The reference is the scored sample (or a user's choice) and holds anomalies; counted, they
    would make every normal galaxy look more ordinary than it is.
    """
    ordered = np.sort(reference[np.isfinite(reference)])
    slope = body_slope(ordered)
    if slope is None:
        return ordered
    upper = np.quantile(ordered, BODY_QUANTILES[1])
    # log10 of the expected count at or above each value, continuing the body's straight line.
    expected = np.log10(len(ordered) * (1 - BODY_QUANTILES[1])) - slope * (ordered - upper)
    return ordered[expected >= np.log10(OUTLIER_EXPECTATION)]


def tail_slope(ordered: np.ndarray, levels: np.ndarray, log10_conformal: np.ndarray) -> float:
    """How fast the reference's survival falls in its tail, in decades per decade of rarity.

    Two reads, the heavier kept: over the body (quantiles `BODY_QUANTILES`), which the
    reference's anomalies hardly move, and just inside the last counted value (`MIN_EXCEEDANCES`
    to four times as many galaxies as extreme), since heavy-tailed statistics fall more slowly
    there than in the body. A statistic tied over its body (0 for most galaxies) falls as its
    model says: one decade per decade.
    """
    slopes = [body_slope(ordered)]
    at_least = len(ordered) - np.searchsorted(ordered, levels, side="left")
    near_tail = (at_least >= MIN_EXCEEDANCES) & (at_least <= 4 * MIN_EXCEEDANCES)
    if near_tail.sum() >= 3:
        slopes.append(survival_slope(levels[near_tail], log10_conformal[near_tail]))
    fitted = [slope for slope in slopes if slope is not None]
    return max(min(fitted), MIN_TAIL_SLOPE) if fitted else 1.0


def calibrated_log10_probability(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """log10 of a tail probability of each value that is honest among ``reference`` galaxies.

    In the body, the conformal p-value (1 + #{reference >= value}) / (n + 1) (Bates et al.
    2023), interpolated in log between reference values so that it is continuous and
    strictly falling; beyond the last value that at least `MIN_EXCEEDANCES` reference
    galaxies reach, log10 p falls linearly with the statistic at the fitted `tail_slope`, so a
    galaxy rarer than the whole reference keeps gaining with its rarity (not capped at
    1 / (n + 1)). A reference of fewer than `MIN_TAIL_REFERENCE` galaxies cannot vouch for a
    tail: there a galaxy rarer than all of them gets 1 / (n + 1), the rarest such a sample
    can say (50 galaxies cannot tell a 1-in-100 galaxy).
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    ordered = typical_reference(np.asarray(reference, dtype=np.float64))
    levels = np.unique(ordered)
    at_least = len(ordered) - np.searchsorted(ordered, levels, side="left")
    log10_conformal = np.log10((1 + at_least) / (len(ordered) + 1))
    if len(ordered) < MIN_TAIL_REFERENCE:
        rarest = -np.log10(len(ordered) + 1)
        return np.where(values > levels[-1], rarest, np.interp(values, levels, log10_conformal))
    last = int(np.flatnonzero(at_least >= min(MIN_EXCEEDANCES, len(ordered)))[-1])
    body = np.interp(values, levels[: last + 1], log10_conformal[: last + 1])
    slope = tail_slope(ordered, levels, log10_conformal)
    tail = log10_conformal[last] - slope * (values - levels[last])
    return np.where(values > levels[last], tail, body)


def others_median(values: np.ndarray) -> np.ndarray:
    """Per galaxy and line, the median over the galaxy's other lines (NaN-aware).

    Leaving the line out keeps it from pulling its own reference, and keeps a line from being
    exactly its galaxy's median (which would give a per-line spread of zero).
    """
    columns = range(values.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a galaxy with one line: all-NaN rows
        return np.column_stack(
            [np.nanmedian(np.delete(values, line, axis=1), axis=1) for line in columns]
        )


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


def absence_probability(
    integrated_snr: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """Tail probability of ``line_absence``: 1 where detected, else how rare no detection is.

    For an undetected galaxy: the share of the reference's other galaxies that are undetected
    too, or, where that is smaller, the probability that a detected galaxy has a S/N as low as
    this one (at least 1: below that all is noise), from a Gaussian in log S/N fitted robustly
    to the detected reference galaxies. The first keeps passive galaxies ordinary in a survey
    that has many; the second measures how far below the emitters a lone lineless galaxy lies.
    NaN counts as detected. ``reference`` (a boolean mask, default all) names the galaxies
    that say what is usual.
    """
    from scipy.stats import norm

    snr = np.nan_to_num(np.asarray(integrated_snr, dtype=np.float64), nan=np.inf)
    reference = np.ones(len(snr), dtype=bool) if reference is None else np.asarray(reference)
    undetected = snr < DETECTION_SNR
    probability = np.ones(len(snr))
    if not undetected.any():
        return probability
    # Each galaxy is compared with the reference galaxies other than itself.
    others_undetected = (undetected & reference).sum() - (undetected & reference)
    others = others_undetected / np.maximum(reference.sum() - reference, 1)
    log_detected = np.log10(snr[reference & ~undetected & np.isfinite(snr)])
    if log_detected.size < 3:  # (almost) nothing is detected: no lines is the norm here
        return probability
    median = np.median(log_detected)
    spread = max(1.4826 * np.median(np.abs(log_detected - median)), 1e-3)
    as_low = norm.cdf((np.log10(np.maximum(snr[undetected], 1.0)) - median) / spread)
    probability[undetected] = np.maximum(others[undetected], as_low)
    return probability


def reference_mask(reference: Sequence[bool] | np.ndarray | None, n: int) -> np.ndarray:
    """The reference rows as a boolean mask of length ``n`` (all rows when None)."""
    if reference is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(reference)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(
            f"reference must be one boolean per galaxy ({n}), got {mask.dtype} of shape "
            f"{mask.shape}"
        )
    return mask


def calibrated(statistic: np.ndarray, in_reference: np.ndarray) -> np.ndarray:
    """log10 tail probability of a ranking statistic (in decades), calibrated on the reference
    galaxies; with too few of them, the model's own probability."""
    if in_reference.sum() < MIN_REFERENCE:
        return -statistic
    return calibrated_log10_probability(statistic, statistic[in_reference])


def calibrate(
    rarity: dict[str, np.ndarray], line_absence: np.ndarray, in_reference: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each component's log10 tail probability calibrated on the reference galaxies, the
    combined rarity (`combined_rarity`), and the score: that rarity calibrated itself on the
    reference, as every component is.

    A reference too small for fitted tails (under `MIN_TAIL_REFERENCE`) caps every p at
    1 / (n + 1), so it cannot tell how rare its rarest galaxies are, and two views agreeing
    would outrank one view far beyond the sample: there one strong signal decides (the
    smallest p). With too few reference galaxies to calibrate at all (under `MIN_REFERENCE`),
    the model probabilities stand, less Bonferroni's factor.
    """
    log10_p = {name: calibrated(statistic, in_reference) for name, statistic in rarity.items()}
    with np.errstate(divide="ignore"):
        log10_p["line_absence"] = np.log10(absence_probability(line_absence, in_reference))
    n_reference = in_reference.sum()
    agreeing = AGREEING_COMPONENTS if n_reference >= MIN_TAIL_REFERENCE else 1
    combined = combined_rarity(log10_p, agreeing)
    if n_reference < MIN_REFERENCE:
        return log10_p, combined, np.maximum(combined - math.log10(len(COMPONENTS)), 0.0)
    score = -calibrated_log10_probability(combined, combined[in_reference])
    return log10_p, combined, np.maximum(score, 0.0)


def combined_rarity(
    log10_p: dict[str, np.ndarray], agreeing: int = AGREEING_COMPONENTS
) -> np.ndarray:
    """In decades: the product of the ``agreeing`` smallest residual p-values (every component
    but ``line_absence``), or the absence's p where that is smaller.

    A real departure shows in more than one view of the residual (a second nucleus makes a
    coherent peak and a galaxy excess; a line turned against H-alpha a line excess and a
    coherent peak), while a normal galaxy that the model happens to miss in one view is rare
    in that view only: asking two views to agree ranks the first above the second. A galaxy
    extreme in one view still leads on that alone (its p dominates the product). The absence
    of lines leaves no residual to agree with, so it stands on its own.
    """
    residual = [name for name in COMPONENTS if name != "line_absence"]
    rarities = -np.maximum(np.stack([log10_p[name] for name in residual], axis=1), -300.0)
    agreement = np.sort(rarities, axis=1)[:, -agreeing:].sum(axis=1)
    return np.maximum(agreement, -np.maximum(log10_p["line_absence"], -300.0))


def benjamini_hochberg(score: np.ndarray, among: np.ndarray, fdr: float) -> np.ndarray:
    """Galaxies of ``among`` discovered at false-discovery rate ``fdr`` from their scores
    (``-log10 p``), by the Benjamini-Hochberg step-up rule; False elsewhere."""
    candidates = np.flatnonzero(among)
    log10_p = np.sort(-score[candidates])
    limits = np.log10(fdr * np.arange(1, len(candidates) + 1) / max(len(candidates), 1))
    passing = np.flatnonzero(log10_p <= limits)
    discovered = np.zeros(len(score), dtype=bool)
    if passing.size:
        threshold = log10_p[passing[-1]]
        discovered[candidates[-score[candidates] <= threshold]] = True
    return discovered


def quality_flags(n_valid: np.ndarray, lines: Sequence[str]) -> list[str]:
    """Per galaxy, the lines invalid over most of the footprint, as 'line_missing:<line>;...'.

    The footprint is the most pixels any line of the galaxy has valid.
    """
    footprint = n_valid.max(axis=1, keepdims=True)
    short = (footprint > 0) & (n_valid < MIN_LINE_COVERAGE * footprint)
    return [";".join(f"line_missing:{lines[i]}" for i in np.flatnonzero(row)) for row in short]


def anomaly_scores(
    latents: pd.DataFrame,
    *,
    k: int = 10,
    latent_columns: Sequence[str] | None = None,
    calibration_classes: Sequence | np.ndarray | None = None,
    reference: Sequence[bool] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Component scores, their tail probabilities, the combined score and the rank of every galaxy.

    Parameters
    ----------
    latents : DataFrame
        A latents table: ``plateifu``, latent columns ``z00``.., per line ``chi2_<line>``,
        ``n_<line>`` (valid pixels), ``peak_<line>`` and ``extended_<line>``, ``median_snr``
        (depth; without it the whole sample is one calibration group) and ``integrated_snr``
        (without it no galaxy counts as lineless), as `manga_assets.model.inference` makes.
    k : int, optional
        Neighbours averaged in the latent density (default 10, clipped to N - 1).
    latent_columns : sequence of str, optional
        Latent columns to use; by default every ``z<digits>`` column.
    calibration_classes : sequence, optional
        One label per row: each galaxy is compared with the galaxies of its label nearest in
        depth (a label with fewer than `MIN_GROUP_SIZE` galaxies joins the whole sample).
        Default: one class, the whole sample.
    reference : sequence of bool, optional
        One flag per row: the galaxies whose statistics calibrate the tail probabilities
        (default: all, the scored sample itself). Name galaxies known to be normal, or not
        fitted on, for p-values that are honest rather than nearly so.

    Returns
    -------
    DataFrame
        ``plateifu``; per component its value and ``p_<component>`` (its tail probability,
        calibrated on the reference); ``anomaly_score`` (``-log10`` of the smallest ``p``
        calibrated itself on the reference, >= 0, higher = more anomalous: above ``s`` for
        about a share ``10**-s`` of normal galaxies); ``anomaly_component`` and
        ``anomaly_line`` (what decided); ``rank`` (1 = most anomalous); ``quality_flags``
        (data-quality artefacts, not ranked). Rows are in the input order.

    Raises
    ------
    ValueError
        If there are fewer than 2 galaxies, a per-line column is missing, a latent value is
        NaN or infinite (the message names the galaxies), or ``calibration_classes`` or
        ``reference`` does not have one entry per galaxy.
    """
    plateifus, matrix = latent_matrix(latents, latent_columns)
    if len(plateifus) < 2:
        raise ValueError(f"anomaly scores need at least 2 galaxies, got {len(plateifus)}")
    lines = _per_line_names(latents)
    fits = _LineFits.read(latents, lines, plateifus)
    depth = latents["median_snr"].to_numpy(dtype=np.float64) if "median_snr" in latents else None
    groups = _calibration_groups(calibration_classes, len(plateifus))
    line_value, line_index, n_lines = worst_line(fits.relative, groups, depth)
    peak_value, peak_index, _ = worst_line(fits.peaks, groups, depth)
    extended_value, extended_index, _ = worst_line(fits.extended, groups, depth, two_sided=True)
    total = fits.chi2.sum(axis=1) / np.maximum(fits.n_valid.sum(axis=1), 1)
    components = {
        "line_excess": line_value,
        "galaxy_excess": depth_residual(np.log(np.maximum(total, 1e-3)), depth),
        "coherent_residual": peak_value,
        "extended_residual": extended_value,
        "latent_density": knn_distance(whitened_active(matrix), k),
        "line_absence": (
            latents["integrated_snr"].to_numpy(dtype=np.float64)
            if "integrated_snr" in latents
            else np.full(len(plateifus), np.nan)
        ),
    }
    in_reference = reference_mask(reference, len(plateifus))
    rarity = {
        "line_excess": model_rarity(line_value, n_lines),
        "galaxy_excess": model_rarity(comparison_z(components["galaxy_excess"], groups, depth)),
        "coherent_residual": model_rarity(peak_value, n_lines),
        # Signed: too faint or too bright.
        "extended_residual": model_rarity(extended_value, n_lines, two_sided=True),
        "latent_density": model_rarity(comparison_z(components["latent_density"], groups, depth)),
    }
    log10_p, combined, score = _calibrate_without_discoveries(
        rarity, components["line_absence"], in_reference
    )
    worst_line_of = {
        "line_excess": np.array(lines, dtype=object)[line_index],
        "coherent_residual": np.array(lines, dtype=object)[peak_index],
        "extended_residual": np.array(lines, dtype=object)[extended_index],
    }
    table = _score_table(plateifus, components, log10_p, score, worst_line_of)
    table["rank"] = _ranks(plateifus, rarity, combined)
    table["quality_flags"] = quality_flags(fits.n_valid, lines)
    return table


def _per_line_names(latents: pd.DataFrame) -> list[str]:
    """The lines of a latents table, once every per-line column is there for each."""
    lines = _line_names(latents, "chi2_")
    missing = [
        f"{prefix}{line}"
        for line in lines
        for prefix in ("n_", "peak_", "extended_")
        if f"{prefix}{line}" not in latents.columns
    ]
    if not lines or missing:
        raise ValueError(
            f"the latents table lacks per-line columns ({missing or 'chi2_<line>'}); rebuild "
            f"the latents with this version of the pipeline"
        )
    return lines


@dataclass(frozen=True)
class _LineFits:
    """The per-line columns of a latents table, (N, L) each; NaN where a line has no data."""

    chi2: np.ndarray
    n_valid: np.ndarray
    relative: np.ndarray  # log reduced chi-square less the median over the galaxy's other lines
    peaks: np.ndarray
    extended: np.ndarray

    @classmethod
    def read(cls, latents: pd.DataFrame, lines: list[str], plateifus: Sequence[str]) -> _LineFits:
        def columns(prefix: str) -> np.ndarray:
            return latents[[f"{prefix}{line}" for line in lines]].to_numpy(dtype=np.float64)

        chi2, n_valid = columns("chi2_"), columns("n_")
        peaks, extended = columns("peak_"), columns("extended_")
        require_finite(chi2, plateifus, "per-line chi-square")
        with np.errstate(invalid="ignore", divide="ignore"):
            log_reduced = np.where(n_valid > 0, np.log(np.maximum(chi2, 1e-3) / n_valid), np.nan)
            relative = log_reduced - others_median(log_reduced)
            peaks = np.where(n_valid > 0, peaks, np.nan)
            extended = np.where(n_valid > 0, extended, np.nan)
        return cls(chi2=chi2, n_valid=n_valid, relative=relative, peaks=peaks, extended=extended)


def _calibration_groups(
    calibration_classes: Sequence | np.ndarray | None, n: int
) -> np.ndarray | None:
    """One integer group per galaxy from its class label; None: the whole sample is one."""
    if calibration_classes is None:
        return None
    labels = np.asarray(calibration_classes, dtype=object)
    if labels.shape != (n,):
        raise ValueError(
            f"calibration_classes has {labels.size} labels for {n} galaxies; "
            f"give one label per row of the latents table"
        )
    return pd.factorize(labels)[0]


def _calibrate_without_discoveries(
    rarity: dict[str, np.ndarray], line_absence: np.ndarray, in_reference: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """`calibrate` on the reference, less the reference's own discoveries when enough remain.

    The reference is usually the sample itself, anomalies included; counted, they make normal
    galaxies look more ordinary than they are (10 % anomalies put 5 % of the normal galaxies
    above 1, not 10 %). Its discoveries at a false-discovery rate of `DISCOVERY_FDR` leave it
    once: in a sample of normal galaxies that removes none, with probability 1 - q.
    """
    log10_p, combined, score = calibrate(rarity, line_absence, in_reference)
    discovered = benjamini_hochberg(score, in_reference, DISCOVERY_FDR)
    if discovered.any() and (in_reference & ~discovered).sum() >= MIN_REFERENCE:
        return calibrate(rarity, line_absence, in_reference & ~discovered)
    return log10_p, combined, score


def _score_table(
    plateifus: Sequence[str],
    components: dict[str, np.ndarray],
    log10_p: dict[str, np.ndarray],
    score: np.ndarray,
    worst_line_of: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Components, their p-values, the score and what decided it (its component and line)."""
    table = pd.DataFrame({"plateifu": plateifus})
    for name in COMPONENTS:
        table[name] = components[name]
        table[f"p_{name}"] = 10 ** log10_p[name]
    deciding = np.stack([log10_p[name] for name in COMPONENTS], axis=1).argmin(axis=1)
    table["anomaly_score"] = score
    table["anomaly_component"] = np.array(COMPONENTS, dtype=object)[deciding]
    table["anomaly_line"] = [
        worst_line_of[component][i] if component in worst_line_of else ""
        for i, component in enumerate(table["anomaly_component"])
    ]
    return table


def _ranks(
    plateifus: Sequence[str], rarity: dict[str, np.ndarray], combined: np.ndarray
) -> np.ndarray:
    """1 = most anomalous, by the combined rarity, which keeps ordering galaxies whose score
    is 0; galaxies that a small sample calls equally rare (each the rarest of its component)
    by their model rarity, then by name."""
    model_rarest = np.max(np.stack(list(rarity.values()), axis=1), axis=1)
    order = np.lexsort((plateifus, -model_rarest, -np.round(combined, 9)))
    rank = np.empty(len(plateifus), dtype=np.int64)
    rank[order] = np.arange(1, len(plateifus) + 1)
    return rank
