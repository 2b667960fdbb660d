"""The Dagster layer: assets, checks, resources, IO managers, sensors and jobs.

Only this package (with ``definitions.py`` and ``cli.py``) imports dagster. Heavy libraries
(torch, umap) are imported inside asset bodies: every run step imports this code location.
"""

import warnings

import dagster as _dagster

# BackfillPolicy on assets is beta in dagster 1.13, and it is how plate batches run; the warning
# would otherwise be printed by every process that loads the code location.
warnings.filterwarnings(
    "ignore", message="Parameter `backfill_policy`", category=_dagster.BetaWarning
)
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=_dagster.BetaWarning)
