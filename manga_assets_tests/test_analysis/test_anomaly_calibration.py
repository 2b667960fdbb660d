"""Scores that mean what they say: among normal galaxies whose component statistics have heavy
tails, a score above s is a 1-in-10^s galaxy, also when the reference holds anomalies."""

import numpy as np
import pandas as pd
import pytest

from manga_assets.analysis.anomaly import (
    COMPONENTS,
    anomaly_scores,
    calibrated_log10_probability,
    combined_rarity,
)
from manga_assets_tests.test_analysis.helpers import LATENT_LINES, latents_table

PIXELS = 400
N_NORMAL = 2000


def heavy_tailed_latents(n: int, seed: int) -> pd.DataFrame:
    """Normal galaxies whose misfits have the heavy tails of real models: Student-t residual
    peaks and summed residuals, log-normal scatter of the per-line chi-square."""
    rng = np.random.default_rng(seed)
    table = latents_table(n, dim=8, seed=seed, pixels=PIXELS)
    for line in LATENT_LINES:
        table[f"chi2_{line}"] *= rng.lognormal(sigma=0.05, size=n) * np.exp(
            0.02 * rng.standard_t(3, size=n)
        )
        table[f"peak_{line}"] = 3.0 + 0.4 * rng.standard_t(3, size=n)
        table[f"extended_{line}"] = rng.standard_t(4, size=n)
    return table


def plant(table: pd.DataFrame, rows: np.ndarray, rng: np.random.Generator) -> None:
    """One clear anomaly per row, of a kind drawn at random."""
    latent = [c for c in table.columns if c.startswith("z")]
    for row in rows:
        line = LATENT_LINES[rng.integers(len(LATENT_LINES))]
        kind = rng.integers(4)
        if kind == 0:
            table.loc[row, f"chi2_{line}"] = 3.0 * PIXELS
        elif kind == 1:
            table.loc[row, f"peak_{line}"] = 30.0
        elif kind == 2:
            table.loc[row, f"extended_{line}"] = -40.0
        else:
            direction = rng.normal(size=len(latent))  # each alone, far out
            table.loc[row, latent] = 40.0 * direction / np.linalg.norm(direction)


def share_above(scores: pd.DataFrame, rows: np.ndarray, threshold: float) -> float:
    return float((scores.loc[rows, "anomaly_score"] > threshold).mean())


@pytest.fixture(scope="module")
def clean():
    """2,000 normal galaxies and 5 planted anomalies, scored against the whole sample."""
    table = heavy_tailed_latents(N_NORMAL + 5, seed=3)
    planted = np.arange(N_NORMAL, N_NORMAL + 5)
    plant(table, planted, np.random.default_rng(0))
    return table, planted, anomaly_scores(table)


@pytest.fixture(scope="module")
def contaminated():
    """The same normal galaxies with a tenth as many anomalies, all in the reference."""
    n_anomalies = N_NORMAL // 10
    table = heavy_tailed_latents(N_NORMAL + n_anomalies, seed=3)
    planted = np.arange(N_NORMAL, N_NORMAL + n_anomalies)
    plant(table, planted, np.random.default_rng(1))
    return table, planted, anomaly_scores(table)


@pytest.mark.parametrize("threshold", [1.0, 2.0])
def test_share_of_normal_galaxies_above_a_score_is_what_the_score_says(clean, threshold):
    _, _, scores = clean
    share = share_above(scores, np.arange(N_NORMAL), threshold)
    assert 10**-threshold / 2 <= share <= 2 * 10**-threshold


@pytest.mark.parametrize("threshold", [1.0, 2.0])
def test_anomalies_in_the_reference_do_not_break_the_calibration(contaminated, threshold):
    _, _, scores = contaminated
    share = share_above(scores, np.arange(N_NORMAL), threshold)
    assert 10**-threshold / 2 <= share <= 2 * 10**-threshold


def test_the_raw_components_are_heavier_tailed_than_gaussian(clean):
    """What the calibration is for: the Gaussian tail probabilities alone would claim far more
    1-in-100 galaxies than there are."""
    _, _, scores = clean
    normal = scores.iloc[:N_NORMAL]
    # Every peak is a robust z-score: 19 of 2,000 Gaussian maxima of 3 reach 3.0.
    assert (normal["coherent_residual"] > 3.0).mean() > 0.03


@pytest.mark.parametrize("component", COMPONENTS[:5])
def test_each_component_probability_is_honest_among_the_reference(clean, component):
    _, _, scores = clean
    p = scores[f"p_{component}"]
    for level in (0.1, 0.01):
        assert level / 2 <= (p <= level).mean() <= level * 1.5


@pytest.mark.parametrize("fixture", ["clean", "contaminated"])
def test_planted_anomalies_rank_at_the_top(fixture, request):
    _, planted, scores = request.getfixturevalue(fixture)
    assert set(scores.loc[planted, "rank"]) == set(range(1, len(planted) + 1))
    assert (scores.loc[planted, "anomaly_score"] > 4).all()


def test_the_deciding_component_and_line_are_named(clean):
    table, planted, scores = clean
    for row in planted:
        component, line = scores.loc[row, ["anomaly_component", "anomaly_line"]]
        assert component in COMPONENTS
        if component in ("galaxy_excess", "latent_density"):  # the whole galaxy's
            assert line == ""
        else:
            assert line in LATENT_LINES


def test_a_lone_lineless_galaxy_among_emitters_scores_its_rarity():
    table = heavy_tailed_latents(N_NORMAL, seed=4)
    table.loc[11, "integrated_snr"] = 0.8  # noise only
    scores = anomaly_scores(table)
    assert scores.loc[11, "anomaly_component"] == "line_absence"
    assert scores.loc[11, "anomaly_score"] >= 2
    assert scores.loc[11, "rank"] <= 3


def test_score_is_monotone_in_each_raw_statistic(clean):
    _, _, scores = clean
    # Every galaxy has the same three lines, so the worst line's z alone sets its probability.
    for component in ("line_excess", "coherent_residual", "extended_residual"):
        ordered = scores.sort_values(component)[f"p_{component}"].to_numpy()
        assert (np.diff(ordered) <= 1e-12).all(), component
    # The score calibrates the combined statistic: it rises with it.
    with np.errstate(divide="ignore"):  # a p beyond float range reads as 0
        log10_p = {c: np.log10(scores[f"p_{c}"].to_numpy()) for c in COMPONENTS}
    combined = combined_rarity(log10_p)
    ordered = scores.assign(combined=combined).sort_values("combined")["anomaly_score"]
    assert (np.diff(ordered.to_numpy()) >= -1e-9).all()


def test_calibrated_probability_is_continuous_strictly_falling_and_unbounded():
    rng = np.random.default_rng(5)
    reference = np.abs(rng.standard_t(3, size=1000))
    values = np.linspace(0, 3 * reference.max(), 20001)
    log10_p = calibrated_log10_probability(values, reference)
    steps = np.diff(log10_p)
    assert (steps <= 0).all() and (steps[values[1:] > reference.min()] < 0).all()
    assert np.abs(steps).max() < 0.05  # no jump between neighbouring values
    # Rarer than every reference galaxy: rarer than 1 / (n + 1), and more so further out.
    assert log10_p[-1] < np.log10(1 / 1001) - 1


def test_a_reference_of_known_normal_galaxies_can_be_named(contaminated):
    table, planted, by_sample = contaminated
    normal = np.ones(len(table), dtype=bool)
    normal[planted] = False
    by_normals = anomaly_scores(table, reference=normal)
    for threshold in (1.0, 2.0):
        share = share_above(by_normals, np.arange(N_NORMAL), threshold)
        assert 10**-threshold / 2 <= share <= 2 * 10**-threshold
    assert set(by_normals.loc[planted, "rank"]) == set(range(1, len(planted) + 1))


def test_reference_needs_one_flag_per_galaxy():
    table = latents_table(30)
    with pytest.raises(ValueError, match="one boolean per galaxy"):
        anomaly_scores(table, reference=[True] * 10)
