"""The IO manager that stores table-valued assets as the Parquet products users open.

Each asset names its product file in its definition metadata, ``product_path``, relative to
``$MANGA_DATA_DIR/products`` and with ``{partition}`` for partitioned assets (for example
``manifest/{partition}.parquet``). The path thus comes from the full asset definition, never
from the last part of its key, so same-named assets under different prefixes cannot collide.

A run over several partitions hands over (and receives) a dict keyed by partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from manga_assets.atomic import atomic_path
from manga_assets.layout import DataLayout

PRODUCT_PATH = "product_path"


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically: a reader never sees half a file."""
    with atomic_path(path) as temporary:
        frame.to_parquet(temporary, index=False)


class ProductsIOManager(dg.ConfigurableIOManager):
    """Stores pandas DataFrames as Parquet files under ``{data_dir}/products``."""

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
        rows, paths = 0, []
        for partition, frame in frames.items():
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(
                    f"ProductsIOManager stores pandas DataFrames; "
                    f"{context.asset_key.to_user_string()} returned {type(frame).__name__}"
                )
            path = self._path(metadata, context.asset_key, partition)
            write_parquet(frame, path)
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
        return pd.read_parquet(self._path(metadata, key, None))
