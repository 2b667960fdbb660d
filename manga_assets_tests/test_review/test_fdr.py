import numpy as np
import pandas as pd
import pytest

from manga_assets.review.fdr import benjamini_hochberg, passing, with_fdr


def test_benjamini_hochberg_matches_a_hand_computed_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    # Sorted: 0.005, 0.01, 0.03, 0.04, 0.5; n p / rank: 0.025, 0.025, 0.05, 0.05, 0.5;
    # the running minimum from the top leaves them so.
    expected = np.array([0.025, 0.05, 0.05, 0.025, 0.5])
    np.testing.assert_allclose(benjamini_hochberg(p), expected)


def test_a_q_value_is_the_smallest_adjusted_value_at_or_beyond_its_rank():
    # 0.02 * 3 / 2 = 0.03 exceeds 0.025 * 3 / 3 = 0.025: the step-up lowers it to 0.025.
    np.testing.assert_allclose(benjamini_hochberg([0.02, 0.025, 0.001]), [0.025, 0.025, 0.003])


def test_nan_p_values_are_not_counted():
    q = benjamini_hochberg(np.array([0.01, np.nan, 0.02]))
    np.testing.assert_allclose(q[[0, 2]], [0.02, 0.02])
    assert np.isnan(q[1])


def test_the_list_at_a_rate_is_the_galaxies_with_q_at_most_that_best_first():
    scores = pd.DataFrame(
        {"plateifu": ["1-101", "1-102", "1-103", "1-104"],
         "anomaly_score": [0.5, 3.0, 2.0, 0.1], "rank": [3, 1, 2, 4]}
    )  # fmt: skip
    table = with_fdr(scores)
    np.testing.assert_allclose(table["p_value"], 10.0 ** -scores["anomaly_score"])
    listed = passing(table, 0.05)
    assert listed["plateifu"].tolist() == ["1-102", "1-103"]
    assert passing(scores, 0.05)["plateifu"].tolist() == ["1-102", "1-103"]
    with pytest.raises(ValueError, match="false-discovery rate"):
        passing(table, 0.0)
