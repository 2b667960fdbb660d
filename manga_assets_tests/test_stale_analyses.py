"""Which analyses a run redoes, decided from what each product on disk records.

The products are written as the assets write them: the latents table and each analysis record,
in their Parquet footer, the provenance of the latents rows they read (computed from those rows,
not from what staleness expects) and their settings; the report a JSON sidecar of its inputs'.
"""

import json

import pandas as pd
import pytest

from manga_assets.defs.io_managers import write_parquet
from manga_assets.layout import REPORT_PROVENANCE, DataLayout, product_path
from manga_assets.provenance import (
    cube_digests,
    cubes_provenance,
    latents_provenance,
    read_provenance,
    with_config,
)
from manga_assets.staleness import REPORT_INPUTS, stale_analyses

VARIANTS = ("ae", "vae")
MODEL_IDS = {"ae": "ae-1", "vae": "vae-1"}
CONFIGS = {
    "umap": {"n_neighbors": 15},
    "anomaly_scores": {"k": 10},
    "neighbours": {"k": 10},
    "agn_sample": {"snr_min": 3.0},
    "agn_report": {},
}
# Every analysis, in the order a run makes them.
ANALYSES = [
    "agn_sample",
    *(f"{v}/{name}" for v in VARIANTS for name in ("latent_table", *REPORT_INPUTS)),
    "agn_report",
]
FEATURES = pd.DataFrame(
    {
        "plateifu": ["10001-1901", "10001-1902", "10002-1901", "10002-1902"],
        "status": ["ok", "ok", "ok", "no_maps"],
        "maps_sha256": ["a" * 64, "b" * 64, "c" * 64, ""],
        "settings_key": "settings-1",
        "n_valid_pixels": [120, 80, 95, 0],
    }
)


def latents_rows(model_id: str, features: pd.DataFrame = FEATURES) -> pd.DataFrame:
    """The latents table a model makes from the usable galaxies of ``features``."""
    usable = features[features["n_valid_pixels"] > 0]
    return pd.DataFrame(
        {
            "plateifu": usable["plateifu"].tolist(),
            "model_id": model_id,
            "cube_digest": cube_digests(usable),
            "z_0": 0.5,
        }
    )


def write_analysis(layout: DataLayout, name: str, provenance: dict) -> None:
    path = layout.products / product_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(pd.DataFrame({"plateifu": ["10001-1901"]}), path, provenance)


def write_report(layout: DataLayout, config: dict) -> None:
    """The report's sidecar: what each product it read records, and its settings."""
    inputs = ["agn_sample", *(f"{v}/{name}" for v in VARIANTS for name in REPORT_INPUTS)]
    read = {name: read_provenance(layout.products / product_path(name)) for name in inputs}
    path = layout.products / REPORT_PROVENANCE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(with_config({"inputs": read}, config)))


@pytest.fixture
def layout(tmp_path) -> DataLayout:
    """Every analysis made from the current models' latents of ``FEATURES``, with ``CONFIGS``."""
    layout = DataLayout(tmp_path)
    write_analysis(
        layout, "agn_sample", with_config(cubes_provenance(FEATURES), CONFIGS["agn_sample"])
    )
    for variant in VARIANTS:
        latents = latents_rows(MODEL_IDS[variant])
        write_analysis(layout, f"{variant}/latent_table", latents_provenance(latents))
        for name in REPORT_INPUTS:
            write_analysis(
                layout, f"{variant}/{name}", with_config(latents_provenance(latents), CONFIGS[name])
            )
    write_report(layout, CONFIGS["agn_report"])
    return layout


def stale(layout: DataLayout, model_ids=MODEL_IDS, configs=CONFIGS, **options) -> dict[str, str]:
    """The analyses a run redoes, with why; they come in the order a run makes them."""
    found = stale_analyses(layout, FEATURES, dict(model_ids), configs, **options)
    made = [item.name for item in found]
    assert made == sorted(made, key=ANALYSES.index)
    return {item.name: item.reason for item in found}


def test_up_to_date_products_are_left_alone(layout):
    assert stale(layout) == {}


def test_a_missing_neighbours_table_redoes_the_neighbours_and_the_report_only(layout):
    (layout.products / product_path("ae/neighbours")).unlink()
    assert stale(layout) == {
        "ae/neighbours": "no record (never made, or unreadable)",
        "agn_report": "the report shows every analysis",
    }


def test_a_new_agn_sample_makes_new_anomaly_scores_which_its_classes_calibrate(layout):
    (layout.products / product_path("agn_sample")).unlink()
    assert stale(layout) == {
        "agn_sample": "no record (never made, or unreadable)",
        "ae/anomaly_scores": "agn_sample's classes calibrate it",
        "vae/anomaly_scores": "agn_sample's classes calibrate it",
        "agn_report": "the report shows every analysis",
    }


def test_an_analysis_of_another_models_latents_is_redone(layout):
    old = latents_provenance(latents_rows("vae-0"))
    write_analysis(layout, "vae/umap", with_config(old, CONFIGS["umap"]))
    assert stale(layout) == {
        "vae/umap": "it records other latents, model_id",
        "agn_report": "the report shows every analysis",
    }


def test_an_analysis_of_latents_from_changed_cubes_is_redone(layout):
    changed = FEATURES.copy()
    changed.loc[2, "maps_sha256"] = "d" * 64  # 10002-1901's MAPS file changed on the server
    found = stale_analyses(layout, changed, dict(MODEL_IDS), CONFIGS)
    assert {item.name for item in found} == set(ANALYSES)
    assert {item.name: item.reason for item in found}["ae/latent_table"] == (
        "it records other latents"
    )


def test_an_analysis_made_with_other_settings_is_redone(layout):
    other = {**CONFIGS, "neighbours": {"k": 5}}
    assert stale(layout, configs=other) == {
        "ae/neighbours": "it records other config",
        "vae/neighbours": "it records other config",
        "agn_report": "it records other inputs",
    }


def test_a_new_latents_table_redoes_every_analysis_of_it(layout):
    (layout.products / product_path("vae/latent_table")).unlink()
    assert stale(layout) == {
        "vae/latent_table": "no record (never made, or unreadable)",
        "vae/umap": "it reads vae/latent_table",
        "vae/anomaly_scores": "it reads vae/latent_table",
        "vae/neighbours": "it reads vae/latent_table",
        "agn_report": "the report shows every analysis",
    }


def test_a_new_model_redoes_its_analyses_and_the_report(layout):
    found = stale(layout, model_ids={**MODEL_IDS, "ae": "ae-2"})
    assert set(found) == {
        "ae/latent_table", "ae/umap", "ae/anomaly_scores", "ae/neighbours", "agn_report"
    }  # fmt: skip
    assert found["ae/latent_table"] == "it records other latents, model_id"


def test_every_analysis_is_redone_when_asked_with_the_reason(layout):
    found = stale(layout, remake_all="no report in this Dagster instance")
    assert found == {name: "no report in this Dagster instance" for name in ANALYSES}
