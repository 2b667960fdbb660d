"""Names and versions declared once for the Dagster layer."""

ACQUISITION = "acquisition"
MODEL = "model"
ANALYSIS = "analysis"
REPORTS = "reports"

PLATES_PARTITION = "plates"
DOWNLOAD_POOL = "sas_download"
PLATES_PER_RUN = 50

OWNER = "team:manga-assets"

# Bump when the code that makes an asset changes what it writes; Dagster then marks it stale.
CATALOG_CODE_VERSION = "1"
MAPS_FILES_CODE_VERSION = "1"

# A plate whose share of failed galaxies exceeds this fails the manifest check (a warning).
MAX_FAILED_SHARE = 0.2
VARIANTS = ("ae", "vae")
