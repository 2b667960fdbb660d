"""Assembles the code location from the modules of ``manga_assets.defs``."""

from __future__ import annotations

import dagster as dg

from manga_assets.defs.assets import acquisition, analysis, model, review
from manga_assets.defs.constants import ANALYSIS, REPORTS
from manga_assets.defs.io_managers import ProductsIOManager
from manga_assets.defs.jobs import STAGE_JOBS, catalog_job, catalog_schedule, plates_job
from manga_assets.defs.model_io import ModelIOManager
from manga_assets.defs.resources import DataDirResource, SasResource
from manga_assets.defs.sensors import new_plates_sensor, release_watch_sensor
from manga_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources of one deployment, all derived from one settings object."""
    data_dir = str(settings.data_dir)
    return {
        "sas": SasResource(
            sas_url=settings.sas_url,
            release=settings.release,
            watch_releases=list(settings.watch_releases),
            download_deadline_s=settings.download_deadline_s,
            download_max_mb=settings.download_max_mb,
        ),
        "data_dir": DataDirResource(data_dir=data_dir, maps_max_bytes=settings.maps_max_bytes),
        "products_io_manager": ProductsIOManager(data_dir=data_dir),
        "model_io_manager": ModelIOManager(data_dir=data_dir),
    }


# Step processes fork from a server that has already imported the code location, instead of each
# starting a fresh interpreter that imports dagster, pandas, astropy and the assets (~2 s a step).
FORKSERVER = {"forkserver": {"preload_modules": ["manga_assets.definitions"]}}


@dg.configured(
    dg.multiprocess_executor,
    config_schema={"max_concurrent": dg.Field(int, is_required=False)},
)
def step_executor(config: dict) -> dict:
    """The multiprocess executor with forked step processes; ``max_concurrent`` stays settable."""
    return {**config, "start_method": FORKSERVER}


def build_definitions(
    settings: Settings | None = None, executor: dg.ExecutorDefinition | None = None
) -> dg.Definitions:
    """The code location for ``settings`` (default: from the environment).

    ``executor`` replaces the forked multiprocess executor: ``manga_assets.defs.celery_location``
    passes the Celery executor, so only a deployment that asks for Celery imports it.
    """
    settings = settings or Settings.from_env()
    return dg.Definitions(
        assets=[
            acquisition.catalog,
            acquisition.maps_files,
            acquisition.line_cubes,
            model.training_set,
            *model.model_assets,
            *analysis.latent_space_assets,
            analysis.agn_sample,
            analysis.agn_report,
            review.labels,
            *review.review_queue_assets,
        ],
        asset_checks=dg.load_asset_checks_from_modules([acquisition]),
        jobs=[catalog_job, plates_job, *STAGE_JOBS],
        schedules=[catalog_schedule],
        sensors=[
            new_plates_sensor,
            release_watch_sensor,
            # Observes the reviewers' labels and refreshes the review queues when they change.
            review.labels_sensor,
            # Refreshes the whole-sample analyses and the report once new plates are embedded.
            dg.AutomationConditionSensorDefinition(
                "analyses_automation",
                target=dg.AssetSelection.groups(ANALYSIS, REPORTS)
                | dg.AssetSelection.assets(["ae", "latent_table"], ["vae", "latent_table"]),
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
        ],
        resources=build_resources(settings),
        executor=executor or step_executor,
    )
