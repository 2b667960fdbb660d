import numpy as np
import pytest

from manga_assets.analysis.anomaly import anomaly_scores, percentile
from manga_assets_tests.test_analysis.helpers import latents_table

OUTLIER = 17


@pytest.fixture(scope="module")
def latents():
    table = latents_table(80, dim=8, seed=1)
    latent = [c for c in table.columns if c.startswith("z")]
    table.loc[OUTLIER, latent] = 25.0
    table.loc[OUTLIER, "recon_error"] = table["recon_error"].max() * 5
    table.loc[OUTLIER, "err_OIII-5008"] = 10.0
    return table


def test_planted_outlier_ranks_first_on_every_score(latents):
    scores = anomaly_scores(latents, k=5, n_estimators=100, seed=0)
    outlier = scores.loc[OUTLIER]
    assert outlier["plateifu"] == latents.loc[OUTLIER, "plateifu"]
    assert outlier["rank"] == 1
    for name in ("recon_error", "knn_distance", "isolation_score"):
        assert outlier[f"{name}_pct"] == 100.0, name
    assert outlier["anomaly_score"] == 100.0
    assert outlier["worst_line"] == "OIII-5008"


def test_score_table_is_complete_and_consistent(latents):
    scores = anomaly_scores(latents, k=5, n_estimators=100, seed=0)
    assert list(scores["plateifu"]) == list(latents["plateifu"])
    assert sorted(scores["rank"]) == list(range(1, len(latents) + 1))
    pct = scores.filter(like="_pct")
    assert pct.shape[1] == 3
    assert ((pct > 0) & (pct <= 100)).all().all()
    assert np.allclose(scores["anomaly_score"], pct.mean(axis=1))
    # Rank follows anomaly_score: a better rank never has a lower score.
    ordered = scores.sort_values("rank")["anomaly_score"].to_numpy()
    assert (np.diff(ordered) <= 0).all()


def test_scores_are_reproducible_with_a_seed(latents):
    first = anomaly_scores(latents, n_estimators=50, seed=3)
    second = anomaly_scores(latents, n_estimators=50, seed=3)
    assert first.equals(second)


def test_nan_latent_names_the_galaxy(latents):
    broken = latents.copy()
    broken.loc[4, "z03"] = np.nan
    with pytest.raises(ValueError, match=broken.loc[4, "plateifu"]):
        anomaly_scores(broken)


def test_nan_recon_error_names_the_galaxy(latents):
    broken = latents.copy()
    broken.loc[9, "recon_error"] = np.nan
    with pytest.raises(ValueError, match=f"recon_error of 1 galaxies.*{broken.loc[9, 'plateifu']}"):
        anomaly_scores(broken)


def test_tiny_sample_clips_k():
    scores = anomaly_scores(latents_table(3), k=10, n_estimators=10)
    assert len(scores) == 3
    assert np.isfinite(scores["knn_distance"]).all()


def test_single_galaxy_is_refused():
    with pytest.raises(ValueError, match="at least 2 galaxies"):
        anomaly_scores(latents_table(1))


def test_percentile_averages_ties():
    assert list(percentile(np.array([1.0, 2.0, 2.0, 5.0]))) == [25.0, 62.5, 62.5, 100.0]
