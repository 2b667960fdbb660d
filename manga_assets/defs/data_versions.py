"""Each plate's own data version, in runs over many plates too.

Dagster 1.13 takes one data version per output, and a run over a range of partitions copies it
onto every partition's materialisation (dagster-io/dagster#18649; only observable source assets
can version each partition). A plate whose MAPS file changed would then share its version with
the plates that did not change, and the stale status the UI and automation read
(``staleStatusByPartition``, which compares each partition's latest data versions) would call the
cubes made from the old file FRESH.

So after the output of a run over several plates, each plate's materialisation is recorded once
more: the same provenance tags (code version, inputs) and metadata, the plate's own data version.
Being the plate's latest materialisation, it is the one the stale-status resolver and the next
range run's input versions read. The UI shows two materialisations per plate for such a run; a
one-plate run sets the version on its output and records one. The asset's checks, evaluated
after, log Dagster's "Data version mismatch ... most recent materialization will be used"
warning: the most recent is the one meant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
)

PLATE_VERSION_NOTE = (
    "The plate's own data version: Dagster gives a run over several plates one data version, "
    "recorded on the materialisation before this one."
)


def output_with_plate_versions(
    context: dg.AssetExecutionContext,
    value: Mapping[str, Any],
    versions: Mapping[str, str],
    metadata: Mapping[str, Any],
) -> Iterator[dg.Output | dg.AssetMaterialization]:
    """The asset's output of ``value`` (by plate), then each plate's data version ``versions``."""
    if len(versions) == 1:
        yield dg.Output(value, data_version=dg.DataVersion(*versions.values()), metadata=metadata)
        return
    yield dg.Output(value, metadata=metadata)
    # Dagster has recorded the output's materialisations by now: it finishes handling an output
    # before the asset's generator goes on. They are the plates' latest (one query for all).
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=list(versions)),
        limit=len(versions),
    ).records
    latest = {r.partition_key: r for r in reversed(records) if r.run_id == context.run.run_id}
    for plate, version in versions.items():
        if plate not in latest:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}[{plate}]: the run's materialisation was "
                "not found to record the plate's data version on; rerun the plate"
            )
        recorded = latest[plate].asset_materialization
        yield dg.AssetMaterialization(
            asset_key=context.asset_key,
            partition=plate,
            description=PLATE_VERSION_NOTE,
            metadata=recorded.metadata,
            tags={
                **recorded.tags,
                DATA_VERSION_TAG: version,
                DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
            },
        )
