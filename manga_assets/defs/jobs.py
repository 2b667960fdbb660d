"""Jobs, selected by asset group or key so a new asset joins its job by where it lives."""

import dagster as dg

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
