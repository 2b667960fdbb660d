"""The review queue (placeholder of the review core): the anomaly ranking less the galaxies
the reviewer has labelled."""

from __future__ import annotations

import numpy as np
import pandas as pd

from manga_assets.review.fdr import benjamini_hochberg


def review_queue(latents, scores, labels, reviewer=None) -> pd.DataFrame:
    """Unlabelled galaxies best first: plateifu, queue_rank, priority, anomaly_score, p_value,
    q_value."""
    table = scores[["plateifu", "anomaly_score", "rank"]].copy()
    table["p_value"] = 10.0 ** -table["anomaly_score"].to_numpy(dtype=np.float64)
    table["q_value"] = benjamini_hochberg(table["p_value"])
    table["priority"] = table["anomaly_score"]
    seen = labels
    if reviewer is not None and len(seen):
        seen = seen[seen["reviewer"] == reviewer]
    table = table[~table["plateifu"].isin(set(seen["plateifu"]) if len(seen) else set())]
    # The anomaly ranking itself (its rank breaks ties in the score).
    table = table.sort_values(["priority", "rank"], ascending=[False, True])
    table = table.reset_index(drop=True)
    table.insert(1, "queue_rank", np.arange(1, len(table) + 1))
    return table[["plateifu", "queue_rank", "priority", "anomaly_score", "p_value", "q_value"]]
