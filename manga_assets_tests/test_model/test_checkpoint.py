from __future__ import annotations

import json

import pytest
import torch

from manga_assets.model.autoencoder import ConvLSTMAutoencoder
from manga_assets.model.checkpoint import CheckpointError, load_model, save_model
from manga_assets_tests.test_model.conftest import GRID, tiny_config


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    config = tiny_config("vae", latent_dim=5)
    model = ConvLSTMAutoencoder(config)
    model_dir = save_model(tmp_path / "models" / "vae", model, config, {"best_epoch": 3})
    return model_dir, model, config


def test_round_trip(saved):
    model_dir, model, config = saved
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.pt",
    ]
    loaded, loaded_config = load_model(model_dir)
    assert loaded_config == config and not loaded.training
    for (name, got), want in zip(
        loaded.state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name
    x = torch.randn(2, 19, GRID, GRID) * 0.3
    model.eval()
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert json.loads((model_dir / "metrics.json").read_text()) == {"best_epoch": 3}


def test_saving_again_replaces_the_model_atomically(saved):
    model_dir, _, config = saved
    other = ConvLSTMAutoencoder(config)
    save_model(model_dir, other, config, {"best_epoch": 7, "loss": float("nan")})
    loaded, _ = load_model(model_dir)
    assert torch.equal(loaded.to_latent.weight, other.to_latent.weight)
    assert json.loads((model_dir / "metrics.json").read_text()) == {"best_epoch": 7, "loss": None}
    # What is left is the link, the version it shows and the previous one (a reader may still
    # hold it; only cleaning under the exclusive lock prunes older ones): no temporaries.
    previous = model_dir.parent / ".vae.previous"
    names = sorted(p.name for p in model_dir.parent.iterdir())
    expected = ["vae", model_dir.resolve().name, previous.name, previous.resolve().name]
    assert names == sorted(expected) and model_dir.is_symlink()


def test_another_architecture_is_a_checkpoint_error(saved):
    model_dir, _, config = saved
    values = json.loads((model_dir / "config.json").read_text())
    values["model"]["encoder_channels"] = [8, 12]
    (model_dir / "config.json").write_text(json.dumps(values))
    with pytest.raises(CheckpointError, match=r"model\.pt was written by a different architecture.*"
                       r"shape mismatch.*retrain"):  # fmt: skip
        load_model(model_dir)


def test_missing_or_unexpected_keys_are_a_checkpoint_error(saved):
    model_dir, model, _ = saved
    state = model.state_dict()
    state.pop("mean_maps")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, model_dir / "model.pt")
    with pytest.raises(CheckpointError, match=r"missing \['mean_maps'\].*unexpected"):
        load_model(model_dir)


@pytest.mark.parametrize("keep", [0, 100, -200])
def test_truncated_or_corrupted_file_is_a_checkpoint_error(saved, keep):
    model_dir, _, _ = saved
    path = model_dir / "model.pt"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep else b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.pt is corrupted.*delete .* and retrain"):
        load_model(model_dir)


def test_missing_or_broken_config_is_a_checkpoint_error(saved):
    model_dir, _, _ = saved
    values = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps(values | {"format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99, this code reads 1"):
        load_model(model_dir)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not a valid model configuration"):
        load_model(model_dir)
    (model_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json does not exist"):
        load_model(model_dir)


def test_pickled_objects_are_refused(saved, tmp_path):
    model_dir, model, _ = saved
    torch.save(model, model_dir / "model.pt")  # a whole pickled module, not a state_dict
    with pytest.raises(CheckpointError, match="holds pickled objects rather than plain tensors"):
        load_model(model_dir)
