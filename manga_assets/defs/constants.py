"""Names and versions declared once for the Dagster layer."""

ACQUISITION = "acquisition"
MODEL = "model"
ANALYSIS = "analysis"
REPORTS = "reports"

PLATES_PARTITION = "plates"
DOWNLOAD_POOL = "sas_download"
# Plates per run of the plate-partitioned assets. A run with the multiprocess executor costs
# ~5 s before and after its steps (CLI or daemon, code location, forkserver, step processes) plus
# ~5 ms per planned partition; 250 plates (~4,000 galaxies, three runs for DR17) keep that near
# 5% of the run's work (benchmarks/RESULTS.md).
PLATES_PER_RUN = 250

OWNER = "team:manga-assets"

# Bump when the code that makes an asset changes what it writes; Dagster then marks it stale.
CATALOG_CODE_VERSION = "1"
MAPS_FILES_CODE_VERSION = "1"

# A plate whose share of failed galaxies exceeds this fails the manifest check (a warning).
MAX_FAILED_SHARE = 0.2
VARIANTS = ("ae", "vae")

# Test-only: the crash-injection tests set this to a stage name ("cubes", "models", ...) and the
# run kills itself with SIGKILL as that stage starts, as the OOM killer or `kill -9` would;
# "training" kills it after the first epoch of the first model.
CRASH_AT_ENV = "MANGA_ASSETS_CRASH_AT"
