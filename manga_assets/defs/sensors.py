"""Sensors: new plates in the catalogue become partitions and runs."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from manga_assets.defs.constants import PLATES_PARTITION, PLATES_PER_RUN
from manga_assets.defs.jobs import plates_job
from manga_assets.defs.partitions import plate_partitions
from manga_assets.defs.resources import DataDirResource

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def plate_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the plates from ``first`` to ``last`` (in added order)."""
    return {RANGE_START: first, RANGE_END: last}


def batches(keys: list[str], size: int = PLATES_PER_RUN) -> list[list[str]]:
    return [keys[start : start + size] for start in range(0, len(keys), size)]


@dg.sensor(
    job=plates_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING
)
def new_plates_sensor(context: dg.SensorEvaluationContext, data_dir: DataDirResource):
    """Adds the catalogue's new plates as partitions and requests their runs in batches."""
    path = data_dir.layout.product("catalog.parquet")
    if not path.exists():
        return dg.SkipReason("no catalogue yet: materialise the catalog asset first")
    plates = sorted(pd.read_parquet(path, columns=["plate"])["plate"].astype(int).unique())
    known = set(context.instance.get_dynamic_partitions(PLATES_PARTITION))
    new = [str(plate) for plate in plates if str(plate) not in known]
    if not new:
        return dg.SkipReason(f"all {len(plates)} plates of the catalogue are partitions already")
    return dg.SensorResult(
        dynamic_partitions_requests=[plate_partitions.build_add_request(new)],
        run_requests=[
            dg.RunRequest(
                run_key=f"plates-{batch[0]}-{batch[-1]}", tags=plate_range_tags(batch[0], batch[-1])
            )
            for batch in batches(new)
        ],  # fmt: skip
    )
