"""The human loop in Dagster: the reviewers' labels and a review queue per model.

- ``labels``: an observable source asset, the labels SQLite file of the data directory
  (`manga_assets.review.labels`); its data version is `LabelStore.version`, which changes with
  every label added.
- ``{variant}/review_queue``: the unlabelled galaxies, best first, for each reviewer who has
  labelled (and, under reviewer "", the queue of one who has not: the anomaly ranking), from
  the labels, the model's anomaly scores and its latents (`manga_assets.review.queue`).
- ``labels_sensor``: observes ``labels`` when its version changes and rematerialises the
  review queues then, and when a model's anomaly scores are rewritten.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from manga_assets.defs.constants import OWNER, VARIANTS
from manga_assets.defs.io_managers import PRODUCT_PATH, PROVENANCE
from manga_assets.defs.resources import DataDirResource
from manga_assets.provenance import latents_provenance

REVIEW = "review"
LABELS_KEY = dg.AssetKey("labels")
# The tag under which an observation records a source asset's data version.
DATA_VERSION_TAG = "dagster/data_version"
# 1: kernel relevance over latents, score kinds and residual profiles; reviewer column.
REVIEW_CODE_VERSION = "1"


def labels_version(data_dir: DataDirResource) -> str:
    """The labels' version; "0:0" while the data directory has none (no file is created)."""
    from manga_assets.review.labels import LabelStore, labels_path

    path = labels_path(data_dir.layout.data_dir)
    return LabelStore(path).version() if path.exists() else "0:0"


@dg.observable_source_asset(
    key=LABELS_KEY,
    group_name=REVIEW,
    owners=[OWNER],
    description="Reviewers' labels of galaxies (data_dir/labels/labels.sqlite).",
)
def labels(data_dir: DataDirResource) -> dg.DataVersion:
    return dg.DataVersion(labels_version(data_dir))


def review_queues(
    latents: pd.DataFrame, scores: pd.DataFrame, current: pd.DataFrame
) -> pd.DataFrame:
    """One queue per reviewer in ``current`` (`LabelStore.current` rows), and the queue of a
    reviewer without labels under reviewer "", stacked with a ``reviewer`` column."""
    from manga_assets.review.queue import rank_queue, review_space

    space = review_space(latents, scores)
    frames = [rank_queue(space, current.iloc[0:0]).assign(reviewer="")]
    for reviewer, theirs in current.groupby("reviewer", sort=True):
        frames.append(rank_queue(space, theirs).assign(reviewer=str(reviewer)))
    table = pd.concat(frames, ignore_index=True)
    return table[["reviewer", *[c for c in table.columns if c != "reviewer"]]]


def build_review_queue_asset(variant: str) -> dg.AssetsDefinition:
    """``{variant}/review_queue``."""

    @dg.asset(
        key=[variant, "review_queue"],
        group_name=REVIEW,
        owners=[OWNER],
        kinds={"parquet"},
        code_version=REVIEW_CODE_VERSION,
        description=(
            f"The galaxies to review next in the {variant} space, per reviewer, best first: the "
            "anomaly ranking reordered by what each reviewer's labels say about similar galaxies."
        ),
        metadata={PRODUCT_PATH: f"{variant}/review_queue.parquet"},
        io_manager_key="products_io_manager",
        deps=[LABELS_KEY],
        ins={
            "latents": dg.AssetIn(key=[variant, "latent_table"]),
            "scores": dg.AssetIn(key=[variant, "anomaly_scores"]),
        },
    )
    def review_queue(
        data_dir: DataDirResource, latents: pd.DataFrame, scores: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        from manga_assets.review.labels import LabelStore, labels_path

        store = LabelStore(labels_path(data_dir.layout.data_dir))
        version = store.version()
        current = store.current()
        table = review_queues(latents, scores, current)
        provenance = {**latents_provenance(latents), "labels_version": version}
        return dg.Output(
            table,
            metadata={
                PROVENANCE: dg.MetadataValue.json(provenance),
                "labels_version": version,
                "reviewers": dg.MetadataValue.json(sorted(current["reviewer"].unique().tolist())),
                "labels": len(current),
                "galaxies": int((table["reviewer"] == "").sum()),
            },
        )

    return review_queue


review_queue_assets = [build_review_queue_asset(variant) for variant in VARIANTS]
REVIEW_QUEUE_KEYS = [asset.key for asset in review_queue_assets]


@dg.sensor(
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=REVIEW_QUEUE_KEYS,
)
def labels_sensor(context: dg.SensorEvaluationContext, data_dir: DataDirResource):
    """Observes ``labels`` when a label is added, and then rematerialises the review queues of
    the models whose anomaly scores and latents exist; also when those scores are rewritten."""
    layout = data_dir.layout
    version = labels_version(data_dir)
    ready = {}
    for variant in VARIANTS:
        scores = layout.product(f"{variant}/anomaly_scores.parquet")
        if scores.exists() and layout.product(f"{variant}/latents.parquet").exists():
            ready[variant] = scores.stat().st_mtime_ns
    state = {"labels": version, "scores": ready}
    previous = json.loads(context.cursor) if context.cursor else {}
    if state == previous:
        return dg.SkipReason(f"labels at version {version}, anomaly scores unchanged")
    events = []
    if previous.get("labels") != version:
        events.append(
            dg.AssetObservation(
                asset_key=LABELS_KEY,
                tags={DATA_VERSION_TAG: version},
                metadata={"labels_version": version},
            )
        )
    requests = []
    if ready:
        requests.append(
            dg.RunRequest(
                run_key=f"review-queue-{version}-{'-'.join(f'{v}{t}' for v, t in ready.items())}",
                asset_selection=[dg.AssetKey([v, "review_queue"]) for v in ready],
            )
        )
    return dg.SensorResult(asset_events=events, run_requests=requests, cursor=json.dumps(state))
