"""The products IO manager: exact paths, round-tripped rows, and provenance in the file."""

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from manga_assets.defs.io_managers import PRODUCT_PATH, PROVENANCE, ProductsIOManager
from manga_assets.provenance import (
    PROVENANCE_KEY,
    cube_digests,
    expected_latents_provenance,
    latents_provenance,
    read_provenance,
)

PLATES = dg.StaticPartitionsDefinition(["7443", "7495"])


@dg.asset(partitions_def=PLATES, metadata={PRODUCT_PATH: "things/{partition}.parquet"})
def things(context: dg.AssetExecutionContext) -> dg.Output[dict[str, pd.DataFrame]]:
    frames = {plate: pd.DataFrame({"plate": [plate]}) for plate in context.partition_keys}
    made_from = {plate: {"made_from": f"maps of {plate}"} for plate in context.partition_keys}
    return dg.Output(frames, metadata={PROVENANCE: dg.MetadataValue.json(made_from)})


@dg.asset(metadata={PRODUCT_PATH: "summary.parquet"})
def summary(things: dict[str, pd.DataFrame]) -> dg.Output[pd.DataFrame]:
    table = pd.concat(things.values(), ignore_index=True)
    table.attrs["ignored"] = "attrs are not written"
    return dg.Output(table, metadata={PROVENANCE: dg.MetadataValue.json({"plates": len(table)})})


@dg.asset(io_manager_key="memory")
def reader(summary: pd.DataFrame) -> dict:
    return summary.attrs[PROVENANCE]


def test_products_round_trip_with_their_provenance_in_the_parquet_metadata(tmp_path):
    io_manager = ProductsIOManager(data_dir=str(tmp_path))
    for plate in PLATES.get_partition_keys():
        assert dg.materialize([things], partition_key=plate, resources={"io_manager": io_manager})
    result = dg.materialize(
        [things, summary, reader],
        selection=[summary, reader],
        resources={"io_manager": io_manager, "memory": dg.InMemoryIOManager()},
    )
    products = tmp_path / "products"
    assert read_provenance(products / "things" / "7495.parquet") == {"made_from": "maps of 7495"}
    assert pd.read_parquet(products / "summary.parquet")["plate"].tolist() == ["7443", "7495"]
    assert read_provenance(products / "summary.parquet") == {"plates": 2}
    assert result.output_for_node("reader") == {"plates": 2}
    keys = pq.read_schema(products / "summary.parquet").metadata.keys()
    assert keys == {b"pandas", PROVENANCE_KEY}, "a frame's attrs never reach the file"


def test_an_unrecorded_or_missing_product_has_no_provenance(tmp_path):
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    assert read_provenance(tmp_path / "plain.parquet") is None
    assert read_provenance(tmp_path / "absent.parquet") is None


def test_latents_made_now_match_the_expected_provenance_and_differ_for_another_model():
    features = pd.DataFrame(
        {
            "plateifu": ["7443-1901", "7443-1902", "7443-3701"],
            "status": ["ok", "ok", "missing"],
            "n_valid_pixels": [10, 0, 0],
            "maps_sha256": ["a" * 64, "b" * 64, ""],
            "settings_key": ["k1", "k1", "k1"],
        }
    )
    embedded = features.iloc[:1]
    latents = pd.DataFrame(
        {
            "plateifu": embedded["plateifu"],
            "model_id": "m1",
            "cube_digest": cube_digests(embedded),
            "z00": [0.5],
        }
    )
    assert latents_provenance(latents) == expected_latents_provenance(features, "m1")
    assert latents_provenance(latents) != expected_latents_provenance(features, "m2")
    changed = features.assign(maps_sha256=["c" * 64, "b" * 64, ""])
    assert latents_provenance(latents) != expected_latents_provenance(changed, "m1")
