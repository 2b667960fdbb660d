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


REPORT_INPUTS = ("umap", "anomaly_scores", "neighbours")


def current_records() -> dict[str, dict]:
    """What each product records when it is up to date: the inputs it read and its settings.

    Written out here rather than taken from the runner, so a runner that expects another record
    fails these tests.
    """
    records: dict[str, dict] = {"agn_sample": {"cubes": "current", "config": {}}}
    for variant in VARIANTS:
        latents = {"latents": f"model-{variant}"}
        records[f"{variant}/latent_table"] = latents
        for name in REPORT_INPUTS:
            records[f"{variant}/{name}"] = {**latents, "config": {}}
    report_reads = ["agn_sample", *(f"{v}/{name}" for v in VARIANTS for name in REPORT_INPUTS)]
    records["agn_report"] = {"inputs": {name: records[name] for name in report_reads}, "config": {}}
    return records


@pytest.fixture
def stale_after(monkeypatch, tmp_path):
    """The analyses a run redoes when the products named have recorded other inputs."""

    monkeypatch.setattr(runner, "cubes_provenance", lambda features: {"cubes": "current"})
    monkeypatch.setattr(
        runner, "expected_latents_provenance", lambda features, model: {"latents": model}
    )

    def stale(outdated: set[str], recorded: dict[str, dict] | None = None) -> set[str]:
        """``outdated`` products have no record; ``recorded`` replaces the current records."""
        paths = {name: name.replace("/", "_") for name in ANALYSES}
        by_file = {paths[name]: name for name in ANALYSES}
        records = {**current_records(), **(recorded or {})}

        def read(path):
            name = by_file[path.name]
            return None if name in outdated else records[name]

        monkeypatch.setattr(runner, "read_provenance", read)
        monkeypatch.setattr(runner, "read_sidecar", read)
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


def test_an_analysis_of_another_models_latents_is_redone(stale_after):
    recorded = {"vae/umap": {"latents": "model-old", "config": {}}}
    assert stale_after(set(), recorded) == {"vae/umap", "agn_report"}


def test_an_analysis_made_with_other_settings_is_redone(stale_after):
    recorded = {"ae/neighbours": {"latents": "model-ae", "config": {"k": 5}}}
    assert stale_after(set(), recorded) == {"ae/neighbours", "agn_report"}
