from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from manga_assets.model import train as train_module
from manga_assets.model.autoencoder import ConvLSTMAutoencoder
from manga_assets.model.checkpoint import CheckpointError
from manga_assets.model.dataset import TrainingSetError, build_training_set, open_training_set
from manga_assets.model.normalise import denormalise
from manga_assets.model.train import (
    CHECKPOINT_FILE,
    TrainConfig,
    TrainingError,
    baseline_chi_square,
    learning_rate_at,
    mean_training_maps,
    train_model,
)
from manga_assets_tests.test_model.conftest import DEVICE, GRID, poisoned_copy, tiny_config
from manga_assets_tests.test_model.cubes import write_cubes

FAST = {"batch_size": 8, "num_threads": 1, "device": DEVICE}


class Interrupt(Exception):
    pass


def interrupt_after_epoch(last: int):
    """An ``on_epoch_end`` that stops training, as a kill would, once epoch ``last`` is saved."""

    def on_epoch_end(epoch: int) -> None:
        if epoch == last:
            raise Interrupt

    return on_epoch_end


@pytest.mark.parametrize("variant", ["ae", "vae"])
def test_chi_square_falls_well_below_the_mean_map(variant, easy_training_set, tmp_path, request):
    if variant == "ae":
        result = request.getfixturevalue("trained_ae")
    else:
        train_config = TrainConfig(epochs=24, learning_rate=5e-3, patience=24, seed=0, **FAST)
        result = train_model(tiny_config(variant), train_config, easy_training_set, tmp_path)

    val = [entry["val_chi2"] for entry in result.history]
    train = [entry["train_chi2"] for entry in result.history]
    assert val[-1] < 0.75 * val[0] and train[-1] < 0.75 * train[0]
    # The kept epoch is the one whose typical validation galaxy is fitted best, or the last
    # where the split is too small to tell.
    fev = [entry["val_fev"] for entry in result.history]
    too_small = result.n_val < train_module.MIN_TYPICAL_GALAXIES
    kept = len(fev) - 1 if too_small else fev.index(max(fev))
    assert result.best_val_fev == fev[kept]
    assert result.best_val_chi2 == val[kept]
    excess_removed = (result.baseline_val_chi2 - result.best_val_chi2) / (
        result.baseline_val_chi2 - 1
    )
    assert excess_removed >= 0.5, result.metrics()
    assert result.baseline_val_chi2 == pytest.approx(
        baseline_chi_square(open_training_set(easy_training_set))
    )
    # The model learnt its own uncertainty from the residuals (it starts at 5 % + 1 %).
    floors = result.model.line_floor().detach().flatten()
    assert (floors - 0.06).abs().max() > 0.01, floors
    metrics = json.loads(json.dumps(result.metrics()))
    assert metrics["n_parameters"] == result.model.get_num_params() > 0
    assert metrics["galaxies_per_second"] > 0 and metrics["device"].split(":")[0] == DEVICE
    if variant == "vae":
        assert all(entry["val_kl"] > 0 for entry in result.history)


def test_baseline_is_the_chi_square_of_the_mean_map(small_training_set):
    training_set = open_training_set(small_training_set)
    normalisation = training_set.normalisation
    mean_map = denormalise(mean_training_maps(training_set), 1.0, normalisation)
    val_rows = training_set.rows("val")
    x = denormalise(np.asarray(training_set.flux[val_rows], np.float64), 1.0, normalisation)
    valid = np.asarray(training_set.valid[val_rows])
    weight = np.asarray(training_set.weight[val_rows], np.float64)
    effective = weight / (1 + weight * (0.05 * mean_map) ** 2)
    expected = (effective * (x - mean_map) ** 2)[valid].mean()
    assert baseline_chi_square(training_set, chunk=5) == pytest.approx(expected, rel=1e-4)


def test_learning_rate_warms_up_then_decays_by_cosine():
    config = TrainConfig(learning_rate=1e-3, warmup_fraction=0.1)
    rates = [learning_rate_at(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4)
    assert max(rates) == pytest.approx(1e-3, rel=1e-3) and int(np.argmax(rates)) == 10
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)


def test_forced_retraining_starts_from_epoch_one(small_training_set, tmp_path):
    model_config = tiny_config()
    train_config = TrainConfig(epochs=2, patience=10, seed=3, **FAST)
    first = train_model(model_config, train_config, small_training_set, tmp_path)
    messages: list[str] = []
    again = train_model(
        model_config, train_config, small_training_set, tmp_path, log=messages.append, fresh=True
    )
    assert again.resumed_from_epoch is None
    assert any(m.startswith("epoch 1/") for m in messages)
    assert any("forced retraining" in m for m in messages)
    # Same seed, same data: training from scratch repeats the same epochs.
    assert [h["val_chi2"] for h in again.history] == pytest.approx(
        [h["val_chi2"] for h in first.history], rel=1e-5
    )


def test_resume_after_interruption_continues_from_the_checkpoint(small_training_set, tmp_path):
    model_config = tiny_config()
    train_config = TrainConfig(epochs=4, patience=10, seed=3, **FAST)
    uninterrupted = train_model(model_config, train_config, small_training_set, tmp_path / "a")

    with pytest.raises(Interrupt):
        train_model(model_config, train_config, small_training_set, tmp_path / "b",
                    on_epoch_end=interrupt_after_epoch(2))  # fmt: skip
    saved = torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 2

    messages: list[str] = []
    resumed = train_model(
        model_config, train_config, small_training_set, tmp_path / "b", log=messages.append
    )
    assert resumed.resumed_from_epoch == 2
    assert any("resuming from the checkpoint of epoch 2" in m for m in messages)
    assert not any(m.startswith("epoch 1/") for m in messages)
    assert [entry["epoch"] for entry in resumed.history] == [1, 2, 3, 4]
    for got, want in zip(resumed.history, uninterrupted.history, strict=True):
        assert got["val_chi2"] == pytest.approx(want["val_chi2"], rel=1e-5)
    for (name, got), want in zip(
        resumed.model.state_dict().items(), uninterrupted.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)

    # Asking again with the same configs trains nothing more; more epochs is another schedule.
    again = train_model(model_config, train_config, small_training_set, tmp_path / "b")
    assert len(again.history) == 4 and again.resumed_from_epoch == 4
    longer = TrainConfig(epochs=5, patience=10, seed=3, **FAST)
    continued = train_model(model_config, longer, small_training_set, tmp_path / "b")
    assert [entry["epoch"] for entry in continued.history] == [1, 2, 3, 4, 5]
    assert continued.resumed_from_epoch is None


def test_checkpoint_of_other_settings_is_not_resumed(small_training_set, tmp_path):
    train_model(tiny_config(), TrainConfig(epochs=1, **FAST), small_training_set, tmp_path)
    messages: list[str] = []
    result = train_model(
        tiny_config(latent_dim=4),
        TrainConfig(epochs=1, **FAST),
        small_training_set,
        tmp_path,
        log=messages.append,
    )
    assert result.resumed_from_epoch is None
    assert any("from other settings or data: training from scratch" in m for m in messages)


def test_corrupted_checkpoint_is_a_checkpoint_error(small_training_set, tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=f"{CHECKPOINT_FILE} is corrupted.*delete"):
        train_model(tiny_config(), TrainConfig(epochs=1, **FAST), small_training_set, tmp_path)


def test_fewer_galaxies_than_one_batch(tmp_path):
    cubes = write_cubes(tmp_path, 5, grid=GRID, seed=11)
    build_training_set(cubes, tmp_path / "ts", grid=GRID)
    train_config = TrainConfig(epochs=2, batch_size=32, num_threads=1, device=DEVICE)
    result = train_model(tiny_config("vae"), train_config, tmp_path / "ts", tmp_path / "ck")
    assert len(result.history) == 2 and result.n_train + result.n_val == 5
    assert all(np.isfinite(entry["val_total"]) for entry in result.history)
    assert all(entry["train_kl"] > 0 for entry in result.history)


def test_non_finite_input_names_the_galaxy(small_training_set, tmp_path):
    copy, victim = poisoned_copy(small_training_set, tmp_path, 2, (4, 3, 3), np.nan)
    with pytest.raises(
        TrainingError, match=f"non-finite input values in galaxies.*{victim}"
    ):
        train_model(tiny_config(), TrainConfig(epochs=1, **FAST), copy, tmp_path / "ck")


def test_non_finite_loss_names_the_galaxies_of_the_batch(small_training_set, tmp_path, monkeypatch):
    class Exploding(ConvLSTMAutoencoder):
        def forward(self, x, valid=None, weight=None, input_valid=None):
            reconstruction, losses = super().forward(x, valid, weight, input_valid)
            return reconstruction, {**losses, "total": losses["total"] * float("inf")}

    monkeypatch.setattr(train_module, "ConvLSTMAutoencoder", Exploding)
    train_config = TrainConfig(epochs=1, batch_size=64, num_threads=1, device=DEVICE)
    train_names = open_training_set(small_training_set).index.query("split == 'train'")["plateifu"]
    with pytest.raises(TrainingError, match="the loss became (inf|nan) at epoch 1") as error:
        train_model(tiny_config(), train_config, small_training_set, tmp_path)
    named = [name for name in train_names if name in str(error.value)]
    # The first batch's galaxies (small sets get smaller batches: effective_batch_size).
    assert len(named) == train_module.effective_batch_size(64, len(train_names))


def test_training_set_that_does_not_fit_the_model_is_refused(small_training_set, tmp_path):
    with pytest.raises(TrainingSetError, match="grid 16 vs the model's 32"):
        train_model(
            tiny_config(grid=32), TrainConfig(epochs=1, **FAST), small_training_set, tmp_path
        )
    with pytest.raises(TrainingSetError, match="normalisation"):
        train_model(
            tiny_config(norm_softening=0.5),
            TrainConfig(epochs=1, **FAST),
            small_training_set,
            tmp_path,
        )


def test_threads_are_set_during_training_and_restored(small_training_set, tmp_path):
    seen = []
    torch.set_num_threads(3)
    train_config = TrainConfig(epochs=1, batch_size=8, num_threads=1, device="cpu")
    train_model(tiny_config(), train_config, small_training_set, tmp_path,
                log=lambda message: seen.append(torch.get_num_threads()))  # fmt: skip
    assert 1 in seen and torch.get_num_threads() == 3


def test_train_config_round_trip_and_resume_key():
    config = TrainConfig(epochs=3, learning_rate=2e-3)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert "patience" not in config.resume_key() and "learning_rate" in config.resume_key()
    # The learning-rate schedule spans the epochs: more epochs is another training.
    assert "epochs" in config.resume_key()
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epochs": 2, "optimiser": "sgd"})


def test_the_step_budget_ends_the_schedule_of_a_large_split():
    config = TrainConfig()
    # The science benchmark's 1,316 training galaxies: every epoch runs.
    assert config.planned_epochs(steps_per_epoch=42) == config.epochs == 24
    # A DR17-sized split of 8,519 galaxies: as many whole epochs as reach 1,500 steps.
    assert config.planned_epochs(steps_per_epoch=267) == 6
    assert config.planned_epochs(steps_per_epoch=10_000) == 1
    assert TrainConfig(max_steps=None).planned_epochs(steps_per_epoch=267) == 24
    assert "max_steps" in config.resume_key()
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_a_step_budget_trains_fewer_epochs_to_the_schedule_s_end(small_training_set, tmp_path):
    train_config = TrainConfig(epochs=6, max_steps=1, patience=10, **FAST)
    messages: list[str] = []
    result = train_model(
        tiny_config(), train_config, small_training_set, tmp_path, log=messages.append
    )
    assert [entry["epoch"] for entry in result.history] == [1]
    assert any("1 epochs, not 6" in m and "max_steps=1" in m for m in messages)
    assert any(m.startswith("epoch 1/1:") for m in messages)
    # The schedule spans the epochs that run: the same training as asking for one epoch.
    one_epoch = TrainConfig(epochs=1, max_steps=None, patience=10, **FAST)
    same = train_model(tiny_config(), one_epoch, small_training_set, tmp_path / "one")
    for key in ("learning_rate", "train_chi2", "val_chi2"):
        assert result.history[0][key] == pytest.approx(same.history[0][key], rel=1e-5)


def test_a_run_killed_inside_a_step_budget_resumes_to_the_same_model(
    small_training_set, tmp_path
):
    n_train = int((open_training_set(small_training_set).index["split"] == "train").sum())
    steps_per_epoch = math.ceil(n_train / train_module.effective_batch_size(8, n_train))
    # Two epochs' worth of steps out of six asked for.
    budget = TrainConfig(epochs=6, max_steps=2 * steps_per_epoch, patience=10, seed=3, **FAST)
    uninterrupted = train_model(tiny_config(), budget, small_training_set, tmp_path / "a")
    assert [entry["epoch"] for entry in uninterrupted.history] == [1, 2]

    with pytest.raises(Interrupt):
        train_model(tiny_config(), budget, small_training_set, tmp_path / "b",
                    on_epoch_end=interrupt_after_epoch(1))  # fmt: skip
    resumed = train_model(tiny_config(), budget, small_training_set, tmp_path / "b")
    assert resumed.resumed_from_epoch == 1
    assert [h["val_chi2"] for h in resumed.history] == pytest.approx(
        [h["val_chi2"] for h in uninterrupted.history], rel=1e-5
    )


def test_a_small_training_set_gets_smaller_batches():
    assert train_module.effective_batch_size(32, 10_000) == 32
    assert train_module.effective_batch_size(32, 40) == 10
    assert train_module.effective_batch_size(32, 3) == 1


@pytest.fixture
def worsening_validation(monkeypatch):
    """The typical validation galaxy fits worse after every epoch: early stopping's worst case."""
    real_evaluate = train_module.evaluate
    epochs = iter(range(1, 100))

    def evaluate(*args, **kwargs):
        return {**real_evaluate(*args, **kwargs), "fev": 1.0 - 0.1 * next(epochs)}

    monkeypatch.setattr(train_module, "evaluate", evaluate)


def test_a_validation_split_too_small_to_tell_epochs_apart_keeps_the_last(
    small_training_set, tmp_path, worsening_validation
):
    """The demo's five validation galaxies chose epoch 4 of 12 by noise: below
    MIN_TYPICAL_GALAXIES the schedule runs to its end and its last epoch is kept."""
    train_config = TrainConfig(epochs=4, patience=1, seed=3, **FAST)
    result = train_model(tiny_config(), train_config, small_training_set, tmp_path)
    assert result.n_val < train_module.MIN_TYPICAL_GALAXIES
    assert len(result.history) == 4 and not result.stopped_early
    assert result.best_epoch == 4


def test_a_large_enough_validation_split_stops_early(
    small_training_set, tmp_path, worsening_validation, monkeypatch
):
    monkeypatch.setattr(train_module, "MIN_TYPICAL_GALAXIES", 1)
    train_config = TrainConfig(epochs=4, patience=1, seed=3, **FAST)
    result = train_model(tiny_config(), train_config, small_training_set, tmp_path)
    assert result.stopped_early and len(result.history) == 2
    assert result.best_epoch == 1


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, **tolerance) -> None:
    for (name, got), want in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=name, **tolerance)


@pytest.mark.parametrize("variant", ["ae", "vae"])
def test_a_split_held_on_the_device_trains_the_same_model(variant, small_training_set, tmp_path):
    """Batches gathered from the resident split are the memory maps' batches: the same draws,
    the same steps, the same weights (bit for bit on the CPU)."""
    settings = {"epochs": 2, "patience": 10, "seed": 5, **FAST}
    from_maps = train_model(tiny_config(variant), TrainConfig(resident_data=False, **settings),
                            small_training_set, tmp_path / "maps")  # fmt: skip
    messages: list[str] = []
    resident = train_model(
        tiny_config(variant),
        TrainConfig(resident_data=True, **settings),
        small_training_set,
        tmp_path / "resident",
        log=messages.append,
    )
    assert any("training split copied to" in message for message in messages)
    exact = {"atol": 0.0, "rtol": 0.0} if DEVICE == "cpu" else {"atol": 1e-5, "rtol": 1e-5}
    _same_weights(resident.model, from_maps.model, **exact)
    assert [h["train_chi2"] for h in resident.history] == pytest.approx(
        [h["train_chi2"] for h in from_maps.history], rel=1e-6
    )


@pytest.mark.skipif(not DEVICE.startswith("cuda"), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("variant", ["ae", "vae"])
def test_cuda_graphs_train_the_eager_model(variant, small_training_set, tmp_path):
    settings = {"epochs": 2, "patience": 10, "seed": 5, "resident_data": True, **FAST}
    eager = train_model(tiny_config(variant), TrainConfig(**settings), small_training_set,
                        tmp_path / "eager")  # fmt: skip
    messages: list[str] = []
    graphed = train_model(
        tiny_config(variant),
        TrainConfig(cuda_graphs=True, **settings),
        small_training_set,
        tmp_path / "graphed",
        log=messages.append,
    )
    assert any("CUDA graphs" in message for message in messages)
    assert [h["val_chi2"] for h in graphed.history] == pytest.approx(
        [h["val_chi2"] for h in eager.history], rel=1e-3
    )
    if variant == "ae":  # the VAE's noise comes from another stream inside a graph
        _same_weights(graphed.model, eager.model, atol=1e-4, rtol=1e-3)
