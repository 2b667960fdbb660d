"""Sensors: new plates in the catalogue become partitions and runs."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd

from manga_assets.defs.constants import PLATES_PARTITION, PLATES_PER_RUN
from manga_assets.defs.jobs import plates_job
from manga_assets.defs.partitions import plate_partitions
from manga_assets.defs.resources import DataDirResource, SasResource
from manga_assets.sas.credentials import credentials_for
from manga_assets.sas.watch import release_available, release_url
from manga_assets.staleness import new_plates

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
    """Adds the catalogue's new plates as partitions and requests their runs in batches.

    Which plates are new is decided as ``manga-assets run`` decides it
    (:func:`manga_assets.staleness.new_plates`). Plates whose products are stale are left to the
    runner: it holds the data directory's lock, and a run this sensor requested while it works
    would rebuild the same plates beside it.
    """
    path = data_dir.layout.product("catalog.parquet")
    if not path.exists():
        return dg.SkipReason("no catalogue yet: materialise the catalog asset first")
    plates = sorted(pd.read_parquet(path, columns=["plate"])["plate"].astype(int).unique())
    new = new_plates(
        [str(plate) for plate in plates], context.instance.get_dynamic_partitions(PLATES_PARTITION)
    )
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


@dg.sensor(minimum_interval_seconds=24 * 3600, default_status=dg.DefaultSensorStatus.RUNNING)
def release_watch_sensor(context: dg.SensorEvaluationContext, sas: SasResource):
    """Reports, once each, watched release names (MANGA_WATCH_RELEASES) that appear on the SAS.

    Switching to a new release stays a deliberate configuration change (MANGA_RELEASE, and a
    release-table entry for its DRP/DAP versions); it changes the catalogue's data version, which
    marks everything downstream stale.
    """
    if not sas.watch_releases:
        return dg.SkipReason("no release names to watch (set MANGA_WATCH_RELEASES)")
    reported = set(json.loads(context.cursor or "[]"))
    credentials = credentials_for(sas.sas_url)
    auth = credentials.basic_auth if credentials is not None else None
    appeared = [
        name
        for name in sas.watch_releases
        if name not in reported and release_available(sas.sas_url, name, auth=auth)
    ]
    if not appeared:
        return dg.SkipReason(f"none of {', '.join(sas.watch_releases)} is on {sas.sas_url} yet")
    for name in appeared:
        context.log.warning(f"release {name} has appeared at {release_url(sas.sas_url, name)}")
    return dg.SensorResult(
        asset_events=[
            dg.AssetObservation(
                asset_key="catalog",
                metadata={
                    "release_appeared": name,
                    "url": dg.MetadataValue.url(release_url(sas.sas_url, name)),
                    "configured_release": sas.release,
                },
            )
            for name in appeared
        ],
        cursor=json.dumps(sorted(reported | set(appeared))),
    )
