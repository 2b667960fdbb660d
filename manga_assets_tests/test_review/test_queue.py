import numpy as np
import pandas as pd

from manga_assets.review.queue import review_queue


def _sample(n_per_kind=30, seed=0):
    """Galaxies in three clusters of a 4-d latent space: normal, 'rings' and 'blobs'. The blobs
    score higher than the rings; within each kind the scores spread."""
    rng = np.random.default_rng(seed)
    centres = {"normal": [0, 0, 0, 0], "ring": [6, 0, 0, 0], "blob": [0, 6, 0, 0]}
    rows, kinds = [], []
    for kind, centre in centres.items():
        count = 4 * n_per_kind if kind == "normal" else n_per_kind
        rows.append(rng.normal(centre, 0.5, size=(count, 4)))
        kinds += [kind] * count
    z = np.vstack(rows)
    plateifus = [f"{1000 + i // 10}-{101 + i % 10}" for i in range(len(z))]
    latents = pd.DataFrame(z, columns=[f"z{i:02d}" for i in range(4)]).assign(plateifu=plateifus)
    base = {"normal": 0.3, "ring": 1.5, "blob": 2.5}
    score = np.array([base[k] for k in kinds]) + rng.uniform(0, 0.8, len(kinds))
    scores = pd.DataFrame({"plateifu": plateifus, "anomaly_score": score})
    scores["rank"] = scores["anomaly_score"].rank(ascending=False, method="first").astype(int)
    scores["anomaly_component"] = "galaxy_excess"
    scores["anomaly_line"] = ""
    return latents, scores.sample(frac=1, random_state=1), pd.Series(kinds, index=plateifus)


def test_with_no_labels_the_queue_is_the_anomaly_ranking():
    latents, scores, _ = _sample()
    queue = review_queue(latents, scores, pd.DataFrame(columns=["plateifu", "label"]))
    expected = scores.sort_values("rank")["plateifu"].tolist()
    assert queue["plateifu"].tolist() == expected
    assert queue["queue_rank"].tolist() == list(range(1, len(expected) + 1))
    np.testing.assert_allclose(queue["priority"], queue["anomaly_score"])
    assert {"p_value", "q_value"} <= set(queue.columns)


def test_labels_of_one_kind_pull_similar_galaxies_up_and_leave_the_queue():
    latents, scores, kind = _sample()
    # Unlabelled, the blobs (higher scores) come first: no ring in the first 20.
    unlabelled = review_queue(latents, scores, pd.DataFrame(columns=["plateifu", "label"]))
    assert (kind.loc[unlabelled["plateifu"].head(20)] == "ring").sum() == 0
    rings = kind.index[kind == "ring"][:2].tolist()
    blobs = kind.index[kind == "blob"][:2].tolist()
    labels = pd.DataFrame(
        {"plateifu": rings + blobs, "reviewer": "ana", "id": range(4),
         "label": ["interesting"] * 2 + ["not_interesting"] * 2}
    )  # fmt: skip
    queue = review_queue(latents, scores, labels, reviewer="ana")
    assert not set(rings + blobs) & set(queue["plateifu"])
    assert (kind.loc[queue["plateifu"].head(20)] == "ring").all()
    # Another reviewer's labels do not move this one's queue.
    other = review_queue(latents, scores, labels, reviewer="ben")
    assert other["plateifu"].tolist() == unlabelled["plateifu"].tolist()
