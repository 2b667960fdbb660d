import math

import numpy as np
import pandas as pd
import pytest

from manga_assets.analysis.evaluation import (
    bootstrap_auc_interval,
    bootstrap_intervals,
    budget_k,
    evaluate,
    precision_at_k,
    ranking_figures,
    roc_auc,
)


def tables(anomaly_kind, score, true_class, pred_class, true_agn, pred_agn):
    plateifus = [f"{8000 + i}-1901" for i in range(len(score))]
    truth = pd.DataFrame(
        {
            "plateifu": plateifus,
            "bpt_class": true_class,
            "is_agn": true_agn,
            "anomaly_kind": anomaly_kind,
        }
    )
    scores = pd.DataFrame({"plateifu": plateifus, "anomaly_score": score})
    agn = pd.DataFrame({"plateifu": plateifus, "bpt_class": pred_class, "is_agn": pred_agn})
    return truth, scores, agn


HAND_MADE = tables(
    anomaly_kind=["none", "none", "ring", "none", "blob", "none"],
    score=[10.0, 20.0, 90.0, 30.0, 80.0, 40.0],
    true_class=["sf", "seyfert", "seyfert", "liner", "lineless", "composite"],
    pred_class=["sf", "seyfert", "liner", "seyfert", "invalid", "sf"],
    true_agn=[False, True, True, True, False, False],
    pred_agn=[False, True, False, True, True, False],
)


def test_hand_made_case():
    metrics = evaluate(*HAND_MADE)
    assert metrics["n_galaxies"] == 6
    assert metrics["n_planted"] == 2
    assert metrics["anomaly_auc"] == 1.0
    assert metrics["anomaly_precision_at_k"] == 1.0
    assert metrics["anomaly_k"] == 2
    assert metrics["anomaly_auc_ring"] == 1.0
    # Seyferts 1 and 2: only 1 flagged.
    assert metrics["seyfert_recall"] == 0.5
    # Classified seyfert: 1 (true seyfert) and 3 (a liner).
    assert metrics["seyfert_precision"] == 0.5
    # Flagged 1, 3, 4: 1 and 3 are AGN. True AGN 1, 2, 3: 1 and 3 flagged.
    assert metrics["agn_precision"] == pytest.approx(2 / 3)
    assert metrics["agn_recall"] == pytest.approx(2 / 3)
    # Matches: 0 (sf), 1 (seyfert), 4 (lineless ~ invalid).
    assert metrics["bpt_agreement"] == 0.5


def test_inverted_scores_give_auc_zero_and_custom_k():
    truth, scores, agn = HAND_MADE
    metrics = evaluate(truth, scores.assign(anomaly_score=-scores["anomaly_score"]), agn, k=3)
    assert metrics["anomaly_auc"] == 0.0
    assert metrics["anomaly_precision_at_k"] == 0.0


def test_random_scores_give_auc_near_half():
    rng = np.random.default_rng(0)
    planted = rng.random(4000) < 0.1
    auc = roc_auc(planted, rng.random(4000))
    assert abs(auc - 0.5) < 0.05
    assert 0.0 <= precision_at_k(planted, rng.random(4000), 100) <= 0.25


def test_absent_classes_give_nan_not_errors():
    metrics = evaluate(
        *tables(
            anomaly_kind=["none", "none"],
            score=[1.0, 2.0],
            true_class=["sf", "sf"],
            pred_class=["sf", "sf"],
            true_agn=[False, False],
            pred_agn=[False, False],
        )
    )
    for name in ("anomaly_auc", "anomaly_precision_at_k", "seyfert_recall", "seyfert_precision",
                 "agn_precision", "agn_recall"):  # fmt: skip
        assert math.isnan(metrics[name]), name
    assert metrics["bpt_agreement"] == 1.0


def test_missing_column_raises():
    truth, scores, agn = HAND_MADE
    with pytest.raises(ValueError, match="anomaly_kind"):
        evaluate(truth.drop(columns="anomaly_kind"), scores, agn)


def test_line_bearing_figures_leave_the_data_quality_kinds_out_and_say_so():
    truth, scores, agn = tables(
        anomaly_kind=["none", "none", "ring", "missing_line", "blob", "none"],
        score=[10.0, 20.0, 90.0, 5.0, 80.0, 40.0],
        true_class=["sf"] * 6,
        pred_class=["sf"] * 6,
        true_agn=[False] * 6,
        pred_agn=[False] * 6,
    )
    metrics = evaluate(truth, scores, agn)
    # All planted: the missing_line galaxy scores lowest of all, so it costs the AUC.
    assert metrics["anomaly_auc"] == pytest.approx(2 / 3)
    assert metrics["anomaly_auc_line_bearing"] == 1.0
    assert metrics["anomaly_average_precision_line_bearing"] == 1.0
    assert metrics["anomaly_average_precision"] < 1.0
    assert metrics["anomaly_auc_line_bearing_high"] == 1.0


def test_one_precision_an_inspection_budget_is_a_k():
    rng = np.random.default_rng(2)
    kind = rng.choice(["none", "none", "none", "ring"], 250)
    score = rng.normal(size=250) + (kind == "ring")
    figures = ranking_figures(kind, score, k=7, budgets=(0.01, 0.05))
    planted = kind != "none"
    assert budget_k(0.01, 250) == 2 and budget_k(0.05, 250) == 12 and budget_k(0.001, 10) == 1
    assert figures["precision_at_1pct"] == precision_at_k(planted, score, 2)
    assert figures["precision_at_5pct"] == precision_at_k(planted, score, 12)
    assert figures["precision_at_k"] == precision_at_k(planted, score, 7)
    assert figures["auc_ring"] == figures["auc"] == roc_auc(planted, score)


def test_bootstrap_intervals_resample_galaxies_as_the_report_does():
    rng = np.random.default_rng(3)
    planted = rng.random(60) < 0.2
    score = rng.normal(size=60) + planted
    intervals = bootstrap_intervals(
        lambda index: {"auc": roc_auc(planted[index], score[index])}, 60, 50, seed=4
    )
    assert intervals["auc"][0] == roc_auc(planted, score)
    assert intervals["auc"][1:] == bootstrap_auc_interval(planted, score, samples=50, seed=4)
    assert intervals["auc"][1] < intervals["auc"][0] < intervals["auc"][2]
