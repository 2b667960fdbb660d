import dagster as dg
import pandas as pd

from manga_assets.defs.assets.review import labels, labels_sensor, review_queue_assets
from manga_assets.defs.io_managers import PRODUCT_PATH, ProductsIOManager, write_parquet
from manga_assets.defs.resources import DataDirResource
from manga_assets.review.labels import LabelStore, labels_path
from manga_assets_tests.test_review.test_queue import _sample


def _products(data_dir):
    latents, scores, kind = _sample()
    write_parquet(latents, data_dir / "products" / "ae" / "latents.parquet")
    write_parquet(scores, data_dir / "products" / "ae" / "anomaly_scores.parquet")
    return kind


def _resources(data_dir):
    return {
        "data_dir": DataDirResource(data_dir=str(data_dir)),
        "products_io_manager": ProductsIOManager(data_dir=str(data_dir)),
    }


def _upstream(name, path):
    return dg.SourceAsset(
        key=["ae", name], metadata={PRODUCT_PATH: path}, io_manager_key="products_io_manager"
    )


def _materialise_queue(data_dir):
    queue = next(a for a in review_queue_assets if a.key == dg.AssetKey(["ae", "review_queue"]))
    result = dg.materialize(
        [queue, _upstream("latent_table", "ae/latents.parquet"),
         _upstream("anomaly_scores", "ae/anomaly_scores.parquet"), labels],
        resources=_resources(data_dir),
        selection=[queue.key],
    )  # fmt: skip
    assert result.success
    return pd.read_parquet(data_dir / "products" / "ae" / "review_queue.parquet")


def test_the_review_queue_materialises_per_reviewer_and_follows_the_labels(tmp_path):
    kind = _products(tmp_path)
    before = _materialise_queue(tmp_path)
    assert set(before["reviewer"]) == {""}
    scores = pd.read_parquet(tmp_path / "products" / "ae" / "anomaly_scores.parquet")
    assert before["plateifu"].tolist() == scores.sort_values("rank")["plateifu"].tolist()

    store = LabelStore(labels_path(tmp_path))
    for plateifu in kind.index[kind == "ring"][:2]:
        store.add(plateifu, "interesting", "", "ana", "ae", None, None)
    for plateifu in kind.index[kind == "blob"][:2]:
        store.add(plateifu, "not_interesting", "", "ana", "ae", None, None)
    after = _materialise_queue(tmp_path)
    ana = after[after["reviewer"] == "ana"]
    assert len(ana) == len(before) - 4
    assert (kind.loc[ana["plateifu"].head(10)] == "ring").all()
    assert after.loc[after["reviewer"] == "", "plateifu"].tolist() == before["plateifu"].tolist()


def test_labels_are_observed_with_their_version(tmp_path):
    # The public dagster module has no observe(); the observation job runs the observe function.
    from dagster._core.definitions.observe import observe

    resources = _resources(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert observe([labels], resources=resources, instance=instance).success
    LabelStore(labels_path(tmp_path)).add("1000-101", "artefact", "", "ana", "ae", None, None)
    assert observe([labels], resources=resources, instance=instance).success
    records = instance.fetch_observations(dg.AssetKey("labels"), limit=10).records
    versions = {r.asset_observation.tags.get("dagster/data_version") for r in records}
    assert versions == {"0:0", "1:1"}


def test_the_sensor_observes_labels_and_requests_the_queues_when_labels_change(tmp_path):
    _products(tmp_path)
    resources = {"data_dir": DataDirResource(data_dir=str(tmp_path))}

    def evaluate(cursor=None):
        with dg.build_sensor_context(resources=resources, cursor=cursor) as context:
            return labels_sensor(context)

    first = evaluate()
    queue = dg.AssetKey(["ae", "review_queue"])
    assert [r.asset_selection for r in first.run_requests] == [[queue]]
    assert isinstance(evaluate(first.cursor), dg.SkipReason)
    LabelStore(labels_path(tmp_path)).add("1000-101", "interesting", "", "ana", "ae", None, None)
    changed = evaluate(first.cursor)
    assert len(changed.run_requests) == 1
    observation = changed.asset_events[0]
    assert observation.asset_key == dg.AssetKey("labels")
    assert observation.tags["dagster/data_version"] == "1:1"
