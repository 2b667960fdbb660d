"""Which analyses a run redoes, decided from what each product recorded."""

import pandas as pd
import pytest

from manga_assets.defs import runner
from manga_assets.defs.constants import VARIANTS

ANALYSES = ["agn_sample", "agn_report"] + [
    f"{variant}/{name}"
    for variant in VARIANTS
    for name in ("latent_table", "umap", "anomaly_scores", "neighbours")
]
CONFIGS = {
    name: {} for name in ("umap", "anomaly_scores", "neighbours", "agn_sample", "agn_report")
}


class CurrentRecord:
    """A recorded provenance equal to whatever the run wants: the product is up to date."""

    def __eq__(self, other) -> bool:
        return True

    def __ne__(self, other) -> bool:
        return False


@pytest.fixture
def stale_after(monkeypatch, tmp_path):
    """The analyses a run redoes when the products named have recorded other inputs."""

    monkeypatch.setattr(runner, "cubes_provenance", lambda features: {"cubes": "current"})
    monkeypatch.setattr(
        runner, "expected_latents_provenance", lambda features, model: {"latents": model}
    )

    def stale(outdated: set[str]) -> set[str]:
        def read(path):
            return None if path.name in outdated else CurrentRecord()

        monkeypatch.setattr(runner, "read_provenance", read)
        monkeypatch.setattr(runner, "read_sidecar", read)
        paths = {name: name.replace("/", "_") for name in ANALYSES}
        outdated = {paths[name] for name in outdated}
        models = {variant: f"model-{variant}" for variant in VARIANTS}
        return set(runner._stale_analyses(pd.DataFrame(), models, tmp_path, paths, CONFIGS))

    return stale


def test_up_to_date_products_are_left_alone(stale_after):
    assert stale_after(set()) == set()


def test_new_neighbours_settings_redo_the_neighbours_and_the_report_only(stale_after):
    assert stale_after({"ae/neighbours"}) == {"ae/neighbours", "agn_report"}


def test_a_new_agn_sample_makes_new_anomaly_scores_which_its_classes_calibrate(stale_after):
    assert stale_after({"agn_sample"}) == {
        "agn_sample", "ae/anomaly_scores", "vae/anomaly_scores", "agn_report",
    }  # fmt: skip
