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

# Kubernetes settings of the training steps ({ae,vae}/model), read by dagster-k8s from this op
# tag: with k8s_job_executor each such step gets its own pod on a GPU node (one GPU, a node
# labelled by NVIDIA's GPU feature discovery, the taint GPU node pools carry); the other steps
# stay on CPU nodes. Other executors ignore the tag. deploy/README.md, "Kubernetes".
GPU_STEP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    }
}
