import numpy as np
import pytest

from manga_assets.analysis.anomaly import (
    COMPARISON_SIZE,
    COMPONENTS,
    anomaly_scores,
    comparison_z,
    model_rarity,
    robust_z,
)
from manga_assets_tests.test_analysis.helpers import LATENT_LINES, latents_table

PIXELS = 400


@pytest.fixture
def latents():
    return latents_table(120, dim=8, seed=1, pixels=PIXELS)


def _rank(table, index: int) -> int:
    return int(anomaly_scores(table, k=5).loc[index, "rank"])


def test_a_line_the_model_cannot_reproduce_ranks_first_and_is_named(latents):
    latents.loc[17, "chi2_OIII-5008"] = 3.0 * PIXELS  # three times its noise
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[17, "rank"] == 1
    assert scores.loc[17, "anomaly_component"] == "line_excess"
    assert scores.loc[17, "anomaly_line"] == "OIII-5008"
    # Rarer than every other galaxy: about the most 120 galaxies can vouch for (itself counted
    # among them, 2 in 121).
    assert scores.loc[17, "anomaly_score"] >= np.log10(121 / 2)


def test_coherent_residual_ranks_first_and_is_named(latents):
    latents.loc[5, "peak_Hb-4862"] = 15.0
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[5, "rank"] == 1
    assert scores.loc[5, "anomaly_component"] == "coherent_residual"
    assert scores.loc[5, "anomaly_line"] == "Hb-4862"


def test_a_line_fainter_than_the_model_over_the_whole_galaxy_ranks_first_and_is_named(latents):
    # Signed: a line the model over-predicts everywhere counts as much as one it under-predicts.
    latents.loc[9, "extended_OIII-5008"] = -8.0
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[9, "rank"] == 1
    assert scores.loc[9, "anomaly_component"] == "extended_residual"
    assert scores.loc[9, "anomaly_line"] == "OIII-5008"
    assert scores.loc[9, "extended_residual"] > 5


def test_isolated_latent_ranks_first(latents):
    latent = [c for c in latents.columns if c.startswith("z")]
    latents.loc[40, latent] = 25.0
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[40, "rank"] == 1
    assert scores.loc[40, "anomaly_component"] == "latent_density"
    assert scores.loc[40, "anomaly_line"] == ""


def test_one_strong_signal_is_not_diluted_by_quiet_components(latents):
    """The combination is a minimum of tail probabilities, not an average of ranks."""
    latents.loc[3, "chi2_Ha-6564"] = 2.0 * PIXELS
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[3, "p_coherent_residual"] > 0.01 and scores.loc[3, "p_latent_density"] > 0.01
    assert scores.loc[3, "rank"] == 1


def test_noise_level_alone_does_not_make_a_galaxy_anomalous(latents):
    """A galaxy reproduced to its noise has chi2 ~ N however large its error bars are."""
    scores = anomaly_scores(latents, k=5)
    assert (scores["anomaly_score"] < 3).all()
    assert (scores["line_excess"].abs() < 6).all()


def test_a_lineless_galaxy_among_emitters_is_anomalous(latents):
    latents.loc[7, "integrated_snr"] = 0.8  # noise only: no detected H-alpha anywhere
    latents.loc[8, "integrated_snr"] /= 5  # 5x the noise: fainter, but detected
    shallow = latents["integrated_snr"].drop(index=7).idxmin()
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[7, "rank"] == 1
    assert scores.loc[7, "anomaly_component"] == "line_absence"
    assert scores.loc[7, "p_line_absence"] < 1e-6
    # The shallowest emitter is still detected: depth is not absence.
    assert scores.loc[shallow, "p_line_absence"] == 1.0


def test_lineless_galaxies_are_not_anomalous_where_many_are(latents):
    """In a survey a share of galaxies is passive: no lines is then not unusual."""
    passive = latents.index[::4]  # a quarter of the sample
    latents.loc[passive, "integrated_snr"] = 0.5
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[passive, "p_line_absence"].min() > 0.2
    # Being passive changes no galaxy's score: the other components decide, as without it.
    # (A 1-in-4 component may lift a galaxy whose other components see nothing by a tenth.)
    without = anomaly_scores(latents.drop(columns="integrated_snr"), k=5)
    decided = without["anomaly_score"] > 0.5
    assert np.allclose(scores.loc[decided, "anomaly_score"], without.loc[decided, "anomaly_score"])
    assert np.allclose(scores["anomaly_score"], without["anomaly_score"], atol=0.1)


def test_score_table_is_complete_and_consistent(latents):
    scores = anomaly_scores(latents, k=5)
    assert list(scores["plateifu"]) == list(latents["plateifu"])
    assert sorted(scores["rank"]) == list(range(1, len(latents) + 1))
    for name in COMPONENTS:
        assert scores[f"p_{name}"].between(0, 1).all()
    assert (scores["anomaly_score"] >= 0).all()
    ordered = scores.sort_values("rank")["anomaly_score"].to_numpy()
    assert (np.diff(ordered) <= 0).all()
    assert set(scores["anomaly_component"]) <= set(COMPONENTS)
    assert anomaly_scores(latents, k=5).equals(scores)


def test_a_line_missing_over_the_footprint_is_flagged_not_ranked(latents):
    latents.loc[8, "n_OIII-5008"] = 10
    latents.loc[8, "chi2_OIII-5008"] = 10.0
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[8, "quality_flags"] == "line_missing:OIII-5008"
    assert (scores.drop(index=8)["quality_flags"] == "").all()
    assert scores.loc[8, "anomaly_score"] < 2


def test_a_galaxy_fitted_worse_in_every_line_than_galaxies_as_deep_ranks_first(latents):
    for line in LATENT_LINES:
        latents.loc[11, f"chi2_{line}"] = 1.6 * PIXELS
    scores = anomaly_scores(latents, k=5)
    assert scores.loc[11, "rank"] == 1
    assert scores.loc[11, "anomaly_component"] == "galaxy_excess"


def test_depth_alone_does_not_make_a_galaxy_anomalous(latents):
    """Deeper galaxies are fitted worse in noise units; each is compared with its peers."""
    depth = latents["median_snr"].to_numpy()
    for line in LATENT_LINES:
        latents[f"chi2_{line}"] *= 1 + 2 * (depth - depth.min()) / (depth.max() - depth.min())
    scores = anomaly_scores(latents, k=5)
    assert scores["anomaly_score"].max() < 3


def test_tail_probabilities_are_calibrated_per_group():
    rng = np.random.default_rng(0)
    # Two bundle sizes whose null distributions differ by a factor of three in spread.
    values = np.concatenate([rng.normal(0, 1, 500), rng.normal(0, 3, 500)])
    groups = np.repeat([19, 127], 500)
    # The model tail probability of each value's robust z-score within its group.
    p = 10 ** -model_rarity(comparison_z(values, groups))
    assert np.mean(p[:500] < 0.05) == pytest.approx(0.05, abs=0.03)
    assert np.mean(p[500:] < 0.05) == pytest.approx(0.05, abs=0.03)


def test_each_galaxy_is_compared_with_the_galaxies_nearest_in_depth():
    """A misfit whose median and spread grow smoothly with depth: against galaxies as deep,
    the shallowest and the deepest are as often in the 5 % tail."""
    rng = np.random.default_rng(2)
    depth = np.sort(rng.uniform(0, 1, 3000))
    values = 5 * depth + (1 + 4 * depth) * rng.normal(0, 1, depth.size)
    p = 10 ** -model_rarity(comparison_z(values, depth=depth))
    for third in np.array_split(np.arange(depth.size), 3):
        assert np.mean(p[third] < 0.05) == pytest.approx(0.05, abs=0.02)
    # Pooled over depth, the deep third would hold most of the tail.
    pooled = 10 ** -model_rarity(robust_z(values))
    assert np.mean(pooled[-1000:] < 0.05) > 0.1


def test_a_group_smaller_than_the_comparison_is_compared_with_itself():
    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, COMPARISON_SIZE - 10)
    depth = rng.uniform(0, 1, values.size)
    assert np.allclose(comparison_z(values, depth=depth), robust_z(values))


def test_nan_latent_names_the_galaxy(latents):
    latents.loc[4, "z03"] = np.nan
    with pytest.raises(ValueError, match=latents.loc[4, "plateifu"]):
        anomaly_scores(latents)


def test_old_latents_without_per_line_chi_square_are_refused(latents):
    old = latents.drop(columns=[f"peak_{line}" for line in LATENT_LINES])
    with pytest.raises(ValueError, match="rebuild the latents"):
        anomaly_scores(old)


def test_tiny_sample_clips_k():
    scores = anomaly_scores(latents_table(3), k=10)
    assert len(scores) == 3 and np.isfinite(scores["latent_density"]).all()


def test_single_galaxy_is_refused():
    with pytest.raises(ValueError, match="at least 2 galaxies"):
        anomaly_scores(latents_table(1))


def test_calibration_classes_keep_a_class_the_model_fits_worse_ordinary(latents):
    """LINER nuclei reproduced worse than SF disks: by depth every LINER ranks high, by class
    only the one whose residual stands out among the LINERs does."""
    liners = np.arange(0, 120, 4)  # a quarter of the sample, at every depth
    latents.loc[liners, "peak_Hb-4862"] += 8.0
    latents.loc[liners[3], "peak_Hb-4862"] += 20.0
    classes = np.where(np.isin(np.arange(120), liners), "liner", "sf")

    by_depth = anomaly_scores(latents, k=5)
    by_class = anomaly_scores(latents, k=5, calibration_classes=classes)

    # By depth every LINER is among the most extreme residual peaks (a quarter of the sample
    # shares them, so their calibrated score is that of a 1-in-4 to 1-in-100 galaxy).
    sf_peaks = by_depth.drop(index=liners)["p_coherent_residual"]
    assert (by_depth.loc[liners, "p_coherent_residual"] < sf_peaks.min()).all()
    ordinary_liners = np.delete(liners, 3)
    assert (
        by_depth.loc[ordinary_liners, "anomaly_score"].median()
        > by_class.loc[ordinary_liners, "anomaly_score"].median()
    )
    assert by_class.loc[liners[3], "rank"] == 1
    assert by_class.loc[liners[3], "anomaly_line"] == "Hb-4862"
    assert (by_class.loc[ordinary_liners, "anomaly_score"] < 3).all()


def test_calibration_classes_need_one_label_per_galaxy(latents):
    with pytest.raises(ValueError, match="one label per row"):
        anomaly_scores(latents, k=5, calibration_classes=["sf"] * 10)
