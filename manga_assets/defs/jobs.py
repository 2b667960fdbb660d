"""Jobs, selected by asset group or key so a new asset joins its job by where it lives.

``catalog_job`` and ``plates_job`` are what the schedule and the new-plates sensor launch. The
four stage jobs split a first full build into the steps ``manga-assets run`` takes, so it can be
run stage by stage from the UI or the Dagster CLI (``dagster job execute -j acquisition_job
--tags '{"dagster/asset_partition_range_start": "10001", ...}'``).
"""

import dagster as dg

from manga_assets.defs.constants import ANALYSIS, REPORTS

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("catalog"),
    description="Fetch the release's DRPall and DAPall and select the cubes to analyse.",
)

plates_job = dg.define_asset_job(
    "plates_job",
    selection=dg.AssetSelection.assets("maps_files", "line_cubes")
    | dg.AssetSelection.assets(["ae", "latents"], ["vae", "latents"]),
    description=(
        "Download the MAPS files of a batch of plates, extract their cubes and embed them with the "
        "current models (no retraining)."
    ),
)

catalog_schedule = dg.ScheduleDefinition(
    name="daily_catalog",
    job=catalog_job,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Re-read the release's DRPall/DAPall daily; the new-plates sensor follows up.",
)

acquisition_job = dg.define_asset_job(
    "acquisition_job",
    selection=dg.AssetSelection.assets("maps_files", "line_cubes"),
    description="Download the MAPS files of a range of plates and extract their cubes.",
)

models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.assets("training_set", ["ae", "model"], ["vae", "model"]),
    description="Build the training set from every plate's cubes and train (or keep) both models.",
)

latents_job = dg.define_asset_job(
    "latents_job",
    selection=dg.AssetSelection.assets(["ae", "latents"], ["vae", "latents"]),
    description="Embed a range of plates with the current models.",
)

analyses_job = dg.define_asset_job(
    "analyses_job",
    selection=dg.AssetSelection.groups(ANALYSIS, REPORTS)
    | dg.AssetSelection.assets(["ae", "latent_table"], ["vae", "latent_table"])
    | dg.AssetSelection.assets(["ae", "review_queue"], ["vae", "review_queue"]),
    description=(
        "Latent tables, UMAP, anomaly scores, neighbours, the AGN sample, the report and the "
        "review queues."
    ),
)

STAGE_JOBS = (acquisition_job, models_job, latents_job, analyses_job)
