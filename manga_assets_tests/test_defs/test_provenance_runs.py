"""A run killed after retraining is repaired by the next: provenance, not memory, decides.

The measured bug of issue 11: a run with a new model signature was killed right after both
models were retrained, as the latents stage began, and the rerun said everything was current
while the latents and analyses were the old model's. Here a tiny release is run once (1 epoch),
then ``manga-assets run --epochs 2`` is killed with SIGKILL as the latents stage starts (the
runner's test-only hook), then killed again as the analyses start, then rerun to completion.
The runs before and after the killed ones run in this process on the same Dagster instance.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from manga_assets.defs.runner import CRASH_AT_ENV, run_pipeline
from manga_assets.provenance import (
    expected_latents_provenance,
    latents_provenance,
    read_provenance,
    read_sidecar,
)
from manga_assets.sas.mirror import MirrorServer
from manga_assets.settings import Settings
from manga_assets_tests.conftest import build_small_release

pytestmark = pytest.mark.slow

MANGA_ASSETS = str(Path(sys.executable).with_name("manga-assets"))
VARIANTS = ("ae", "vae")
# Tiny models: the quality gate only blocks with >= 30 validation galaxies, and --min-fev makes
# sure it never does here.
FIRST = {"epochs": 1, "min_fev": -10.0}
SECOND = {**FIRST, "epochs": 2}
ANALYSES = ("latents", "umap", "anomaly_scores", "neighbours")  # latents: the latent table


def model_id(products: Path, variant: str) -> str:
    return pd.read_json(products / "models" / variant / "metrics.json", typ="series")["model_id"]


def latent_rows(products: Path, variant: str) -> pd.DataFrame:
    return pd.concat(
        pd.read_parquet(path) for path in sorted((products / variant / "latents").glob("*.parquet"))
    )


def every_features(products: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(p) for p in sorted((products / "features").glob("*.parquet")))


def latest_latents_tags(instance: DagsterInstance, variant: str, plate: str) -> dict[str, str]:
    record = instance.get_latest_data_version_record(
        AssetKey([variant, "latents"]), partition_key=plate
    )
    return dict(record.asset_materialization.tags)


def model_data_version(instance: DagsterInstance, variant: str) -> str:
    record = instance.get_latest_data_version_record(AssetKey([variant, "model"]))
    return record.asset_materialization.tags["dagster/data_version"]


@pytest.fixture(scope="module")
def killed_after_retraining(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    release = build_small_release(root / "release", n_plates=2, galaxies_per_plate=4, seed=11)
    home, data_dir = root / "dagster_home", root / "data"
    home.mkdir()
    products = data_dir / "products"
    states = {}
    with pytest.MonkeyPatch.context() as patch, MirrorServer(release.root) as server:
        patch.setenv("DAGSTER_HOME", str(home))
        instance = DagsterInstance.get()
        settings = Settings(sas_url=server.url, release="DR17", data_dir=data_dir)
        env = {**os.environ, "MANGA_SAS_URL": server.url, "MANGA_DATA_DIR": str(data_dir)}

        def run_here(training):
            return run_pipeline(settings, training=training, instance=instance, log=lambda m: None)

        def killed_at(stage: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [MANGA_ASSETS, "run", "--epochs", "2", "--min-fev", "-10"],
                env={**env, CRASH_AT_ENV: stage},
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip

        states["first"] = run_here(FIRST)
        plates = states["first"].plates
        states["old_ids"] = {v: model_id(products, v) for v in VARIANTS}
        states["old_tags"] = {v: latest_latents_tags(instance, v, plates[0]) for v in VARIANTS}

        states["killed_in_training"] = killed_at("training")
        states["ids_after_training_kill"] = {v: model_id(products, v) for v in VARIANTS}

        states["killed_at_latents"] = killed_at("latents")
        states["resumed_from"] = {
            v: json.loads((products / "models" / v / "metrics.json").read_text())[
                "resumed_from_epoch"
            ]
            for v in VARIANTS
        }
        states["ids_after_kill"] = {v: model_id(products, v) for v in VARIANTS}
        states["rows_after_kill"] = {v: latent_rows(products, v) for v in VARIANTS}
        states["model_versions_after_kill"] = {v: model_data_version(instance, v) for v in VARIANTS}
        states["tags_after_kill"] = {
            v: latest_latents_tags(instance, v, plates[0]) for v in VARIANTS
        }

        states["killed_at_analyses"] = killed_at("analyses")
        states["umap_after_second_kill"] = {
            v: read_provenance(products / v / "umap.parquet") for v in VARIANTS
        }
        states["rows_after_second_kill"] = {v: latent_rows(products, v) for v in VARIANTS}

        states["rerun"] = run_here(SECOND)
        states["tags_after_rerun"] = {
            v: latest_latents_tags(instance, v, plates[0]) for v in VARIANTS
        }
        states["model_versions_after_rerun"] = {
            v: model_data_version(instance, v) for v in VARIANTS
        }
        states["again"] = run_here(SECOND)
    return products, states


def test_a_kill_during_training_publishes_nothing_and_the_next_run_resumes(
    killed_after_retraining,
):
    _, states = killed_after_retraining
    killed = states["killed_in_training"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert states["ids_after_training_kill"] == states["old_ids"]
    # The first model was killed after its first epoch; the next run went on from its checkpoint.
    assert sorted(states["resumed_from"].values(), key=str) == [1, None]


def test_the_kill_left_latents_of_the_old_models_beside_the_new_models(killed_after_retraining):
    _, states = killed_after_retraining
    killed = states["killed_at_latents"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    for variant in VARIANTS:
        assert states["ids_after_kill"][variant] != states["old_ids"][variant]
        assert set(states["rows_after_kill"][variant]["model_id"]) == {states["old_ids"][variant]}


def test_dagster_sees_the_old_latents_as_made_from_another_model(killed_after_retraining):
    _, states = killed_after_retraining
    for variant in VARIANTS:
        model_input = f"dagster/input_data_version/{variant}/model"
        before, after = states["tags_after_kill"][variant], states["tags_after_rerun"][variant]
        # The model's data version is its model_id; the latents recorded the old one as input.
        assert states["model_versions_after_kill"][variant] == states["ids_after_kill"][variant]
        assert before[model_input] == states["old_ids"][variant]
        assert before[model_input] != states["model_versions_after_kill"][variant]
        assert after[model_input] == states["model_versions_after_rerun"][variant]
        assert after["dagster/data_version"] != before["dagster/data_version"]


def test_a_kill_before_the_analyses_leaves_current_latents_and_stale_analyses(
    killed_after_retraining,
):
    _, states = killed_after_retraining
    killed = states["killed_at_analyses"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    for variant in VARIANTS:
        rows = states["rows_after_second_kill"][variant]
        assert set(rows["model_id"]) == {states["ids_after_kill"][variant]}
        assert states["umap_after_second_kill"][variant]["model_id"] == states["old_ids"][variant]


def test_the_rerun_embeds_and_analyses_with_the_current_models(killed_after_retraining):
    products, states = killed_after_retraining
    rerun = states["rerun"]
    assert rerun.retrained == {"ae": False, "vae": False}
    assert rerun.embedded_plates == [], "the second killed run embedded every plate already"
    assert "agn_report" in rerun.analysed and "ae/umap" in rerun.analysed
    features = every_features(products)
    for variant in VARIANTS:
        current = model_id(products, variant)
        rows = latent_rows(products, variant)
        assert set(rows["model_id"]) == {current}
        assert len(rows) == (features["status"] == "ok").sum()
        gathered = pd.read_parquet(products / variant / "latents.parquet")
        expected = expected_latents_provenance(features, current)
        assert latents_provenance(gathered) == expected
        for name in ANALYSES:
            assert read_provenance(products / variant / f"{name}.parquet") == expected, name
    report = read_sidecar(products / "reports" / "agn_report.provenance.json")
    assert report["inputs"]["vae/neighbours"] == expected_latents_provenance(
        features, model_id(products, "vae")
    )
    assert report["inputs"]["agn_sample"] == read_provenance(products / "agn_sample.parquet")


def test_a_rerun_after_that_has_nothing_to_do(killed_after_retraining):
    _, states = killed_after_retraining
    again = states["again"]
    assert again.embedded_plates == [] and again.analysed == []
    assert again.report == states["rerun"].report
