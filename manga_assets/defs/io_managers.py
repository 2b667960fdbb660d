"""The IO manager that stores table-valued assets as the Parquet products users open.

Each asset names its product file in its definition metadata, ``product_path``, relative to
``$MANGA_DATA_DIR/products`` and with ``{partition}`` for partitioned assets (for example
``manifest/{partition}.parquet``). The path thus comes from the full asset definition, never
from the last part of its key, so same-named assets under different prefixes cannot collide.

A run over several partitions hands over (and receives) a dict keyed by partition.

Provenance is written here, in one place: an asset that returns ``dg.Output(frame,
metadata={"provenance": MetadataValue.json(...)})`` (for a partitioned asset, a dict keyed by
partition) gets it stored in the Parquet file's key-value metadata, in the same atomic write as
the rows, so a file never claims to be made from something it was not. Loading puts it back in
``frame.attrs["provenance"]`` for assets that record what they read (the report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from manga_assets.atomic import atomic_path
from manga_assets.defs.step_lock import HoldsDataDirLock
from manga_assets.layout import DataLayout
from manga_assets.provenance import PROVENANCE_KEY, read_provenance

PRODUCT_PATH = "product_path"
PROVENANCE = "provenance"


def write_parquet(frame: pd.DataFrame, path: Path, provenance: dict | None = None) -> None:
    """Write ``frame`` to ``path`` atomically, with ``provenance`` in its key-value metadata.

    Written through pyarrow rather than ``DataFrame.to_parquet``, which would also store the
    frame's ``attrs``: those are inherited from inputs and would look like a second provenance.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if provenance is not None:
        metadata = {**(table.schema.metadata or {}), PROVENANCE_KEY: json.dumps(provenance)}
        table = table.replace_schema_metadata(metadata)
    # Durable: a table that exists is taken as done, so a power cut must not leave it empty.
    with atomic_path(path, durable=True) as temporary:
        pq.write_table(table, temporary)


class ProductsIOManager(HoldsDataDirLock, dg.ConfigurableIOManager):
    """Stores pandas DataFrames as Parquet files under ``{data_dir}/products``.

    A step that uses it holds the data directory's lock, shared
    (:mod:`manga_assets.defs.step_lock`).
    """

    data_dir: str

    def _path(self, definition_metadata: dict[str, Any], key: dg.AssetKey, partition: str | None):
        template = definition_metadata.get(PRODUCT_PATH)
        if template is None:
            raise dg.DagsterInvariantViolationError(
                f"asset {key.to_user_string()} has no '{PRODUCT_PATH}' metadata; "
                "ProductsIOManager needs it to know where the product lives"
            )
        template = getattr(template, "value", template)
        return DataLayout(Path(self.data_dir)).product(template.format(partition=partition))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        metadata = context.definition_metadata or {}
        if context.has_asset_partitions:
            if not isinstance(obj, dict):
                raise TypeError(
                    f"{context.asset_key.to_user_string()} is partitioned: return a dict "
                    "{partition_key: DataFrame}"
                )
            frames = obj
        else:
            frames = {None: obj}
        recorded = (context.output_metadata or {}).get(PROVENANCE)
        recorded = getattr(recorded, "value", recorded)
        rows, paths = 0, []
        for partition, frame in frames.items():
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(
                    f"ProductsIOManager stores pandas DataFrames; "
                    f"{context.asset_key.to_user_string()} returned {type(frame).__name__}"
                )
            path = self._path(metadata, context.asset_key, partition)
            if recorded is None:
                provenance = None
            elif partition is None:
                provenance = recorded
            else:
                provenance = recorded[partition]
            write_parquet(frame, path, provenance)
            rows += len(frame)
            paths.append(path)
        context.add_output_metadata(
            {
                "rows": rows,
                "path": dg.MetadataValue.path(
                    str(paths[0] if len(paths) == 1 else paths[0].parent)
                ),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        metadata = upstream.definition_metadata or {}
        key = context.asset_key
        if context.has_asset_partitions:
            return {
                partition: pd.read_parquet(self._path(metadata, key, partition))
                for partition in context.asset_partition_keys
            }
        path = self._path(metadata, key, None)
        frame = pd.read_parquet(path)
        frame.attrs[PROVENANCE] = read_provenance(path)
        return frame
