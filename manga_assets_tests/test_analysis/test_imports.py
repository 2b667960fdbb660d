import subprocess
import sys

MODULES = ("agn", "anomaly", "bpt", "embedding", "evaluation", "figures", "latent", "neighbours",
           "report")  # fmt: skip
HEAVY = ("dagster", "umap", "numba", "torch", "matplotlib.pyplot")


def test_analysis_imports_no_heavy_or_dagster_modules():
    imports = "; ".join(f"import manga_assets.analysis.{m}" for m in MODULES)
    check = f"import sys; {imports}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
