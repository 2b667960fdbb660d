"""Jobs, selected by asset group or key so a new asset joins its job by where it lives."""

import dagster as dg

catalog_job = dg.define_asset_job(
    "catalog_job",
    selection=dg.AssetSelection.assets("catalog"),
    description="Fetch the release's DRPall and DAPall and select the cubes to analyse.",
)

plates_job = dg.define_asset_job(
    "plates_job",
    selection=dg.AssetSelection.assets("maps_files", "line_cubes"),
    description="Download the MAPS files of a batch of plates and extract their line cubes.",
)
