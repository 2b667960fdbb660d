"""The model asset trains with DDP when its run config asks for several processes."""

from __future__ import annotations

import json

import dagster as dg
import torch

from manga_assets.defs.assets.model import build_model_asset
from manga_assets.defs.model_io import ModelIOManager
from manga_assets.defs.resources import DataDirResource
from manga_assets.layout import TRAINING_SET_DIR, DataLayout
from manga_assets.model.checkpoint import load_model
from manga_assets.model.dataset import build_training_set
from manga_assets_tests.test_model.cubes import write_cubes


def test_ddp_run_config_trains_the_model_asset_in_two_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("MANGA_TORCH_THREADS", "2")  # one torch thread per process
    layout = DataLayout(tmp_path)
    cubes = write_cubes(tmp_path / "cubes_src", 12, grid=32, seed=5)
    build_training_set(cubes, layout.products / TRAINING_SET_DIR, grid=32, seed=0)
    training = {
        "epochs": 1, "batch_size": 8, "min_fev": -10.0,
        "distributed": {"processes": 2, "backend": "gloo"},
    }  # fmt: skip
    previous = torch.get_num_threads()
    try:
        result = dg.materialize(
            [build_model_asset("ae")],
            resources={
                "data_dir": DataDirResource(data_dir=str(tmp_path)),
                "model_io_manager": ModelIOManager(data_dir=str(tmp_path)),
            },
            run_config={"ops": {"ae__model": {"config": training}}},
        )
    finally:
        torch.set_num_threads(previous)
    assert result.success
    metrics = json.loads((layout.model_dir("ae") / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["history"]) == 1
    assert metrics["n_train"] + metrics["n_val"] == 12
    materialization = result.asset_materializations_for_node("ae__model")[0]
    assert materialization.metadata["training_processes"].value == 2
    model, config = load_model(layout.model_dir("ae"))
    assert config.variant == "ae" and model.get_num_params() == metrics["n_parameters"]
