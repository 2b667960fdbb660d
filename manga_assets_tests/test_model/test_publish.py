"""train_or_keep: the model asset's decision, training, gate and identity, without Dagster."""

from manga_assets.model.checkpoint import save_model
from manga_assets.model.publish import (
    GateSettings,
    model_identity,
    model_signature,
    train_or_keep,
)
from manga_assets.model.train import TrainConfig
from manga_assets_tests.test_model.conftest import tiny_config
from manga_assets_tests.test_model.test_train import FAST

# A bar any model clears: these tests are about the mechanics, not the quality.
OPEN_GATE = GateSettings(min_fev=-1e9, min_galaxies_to_block=10_000)


def _call(small_training_set, tmp_path, **overrides):
    settings = {
        "code_version": "test",
        "training_set_dir": small_training_set,
        "model_dir": tmp_path / "model",
        "checkpoint_dir": tmp_path / "checkpoints",
        "gate": OPEN_GATE,
        "growth_to_retrain": 0.25,
        **overrides,
    }
    return train_or_keep(tiny_config(), TrainConfig(epochs=2, **FAST), **settings)


def test_trains_without_a_model_then_keeps_the_saved_one(small_training_set, tmp_path):
    epochs: list[int] = []
    messages: list[str] = []
    trained = _call(small_training_set, tmp_path, on_epoch_end=epochs.append, log=messages.append)
    assert trained.decision.retrain and trained.decision.reason == "no trained model yet"
    assert messages[0] == "ae: retraining the model: no trained model yet"
    assert epochs == [1, 2]
    assert trained.passed and trained.quality["passed"]
    assert trained.metrics["n_galaxies_trained"] == trained.n_galaxies == 24
    signature = model_signature("test", tiny_config(), TrainConfig(epochs=2, **FAST))
    assert "patience" not in signature["training"] and signature["training"]["epochs"] == 2
    assert len(trained.model_id) == 16

    save_model(tmp_path / "model", trained.model, trained.config, trained.metrics)
    kept = _call(small_training_set, tmp_path)
    assert not kept.decision.retrain
    assert kept.model_id == trained.model_id and kept.metrics == trained.metrics

    forced = _call(small_training_set, tmp_path, force=True)
    assert forced.decision.reason == "retraining was requested"

    # What the asset reports: the kept model's own training, and the decision of this call.
    report = kept.report()
    assert report["retrained"] is False and report["model_id"] == trained.model_id
    assert report["epochs_run"] == len(trained.metrics["history"]) == 2
    assert report["best_val_chi2"] == trained.metrics["best_val_chi2"]
    assert report["galaxies_in_training_set"] == 24
    assert forced.report()["retrain_reason"] == "retraining was requested"
    gate = trained.gate_report()
    assert gate["fev"] == trained.quality["fev"] == report["fev"]
    assert gate["val_galaxies"] == trained.quality["n_val"]
    assert gate["warnings"] == ("; ".join(trained.quality["problems"]) or "none")


def test_the_identity_follows_the_signature_the_training_set_and_the_fit():
    signature = {"code_version": "1"}
    base = model_identity(signature, "abc", 1.5)
    assert base == model_identity({"code_version": "1"}, "abc", 1.5)
    assert base != model_identity({"code_version": "2"}, "abc", 1.5)
    assert base != model_identity(signature, "abd", 1.5)
    assert base != model_identity(signature, "abc", 1.25)
