"""How well a predictor fits the typical galaxy, in units of the noise.

Per galaxy g, with reduced chi-squares (per valid pixel) m_g of the predictor and b_g of the mean
map (each line's mean training map, what the model starts from),

    FEV_g = (b_g - m_g) / (b_g - 1),

the share of the mean map's excess over the noise that the predictor removes in that galaxy: 0 is
no better than the mean map, 1 is noise-limited. Early stopping and the quality gate both use the
median of FEV_g over the galaxies that have something to explain (b_g - 1 >= `MIN_EXCESS`; a
galaxy without line emission has no FEV). A pooled chi-square is a sum over galaxies, and one
bright odd galaxy made up 91 % of it on a realistic release; a median moves by at most one rank
when one galaxy is added or left out.
"""

from __future__ import annotations

import numpy as np

# A galaxy enters the median when the mean map misses it by at least the noise again.
MIN_EXCESS = 1.0
# Fewer validation galaxies with an FEV than this cannot say which epoch or which model fits the
# typical galaxy: early stopping then keeps the last epoch, and the gate only warns.
MIN_TYPICAL_GALAXIES = 30
BOOTSTRAP_SAMPLES = 1000


def galaxy_fev(chi2: np.ndarray, chi2_mean_map: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per galaxy FEV_g from chi-square sums and valid-pixel counts; NaN where the mean map
    leaves less than `MIN_EXCESS` per pixel to explain (or the galaxy has no valid pixel)."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    model = np.asarray(chi2, dtype=np.float64) / n
    excess = np.asarray(chi2_mean_map, dtype=np.float64) / n - 1.0
    explainable = (excess >= MIN_EXCESS) & (np.asarray(counts) > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(explainable, (excess + 1.0 - model) / excess, np.nan)


def typical_fev(fev: np.ndarray) -> float:
    """Median FEV_g of the galaxies that have one; NaN when none has."""
    fev = np.asarray(fev, dtype=np.float64)
    fev = fev[np.isfinite(fev)]
    return float(np.median(fev)) if fev.size else float("nan")


def typical_fev_interval(
    fev: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """`typical_fev` and its bootstrap 95 % interval over galaxies."""
    fev = np.asarray(fev, dtype=np.float64)
    fev = fev[np.isfinite(fev)]
    if fev.size == 0:
        return float("nan"), float("nan"), float("nan")
    resampled = fev[np.random.default_rng(seed).integers(0, fev.size, size=(samples, fev.size))]
    low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5])
    return typical_fev(fev), float(low), float(high)
