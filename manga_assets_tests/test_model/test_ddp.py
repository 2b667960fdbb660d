"""Distributed training (torch DDP, gloo on the CPU): two processes against one.

The ranks are real processes talking over gloo on the loopback interface. The first training in
the session starts the forkserver that imports torch once (about 10 s on the shared test
machine); each later one starts its ranks in about a second.
"""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
import torch

from manga_assets.model.distributed import DistributedConfig, Ranks, epoch_steps
from manga_assets.model.train import CHECKPOINT_FILE, TrainConfig, TrainingError, train_model
from manga_assets_tests.test_model.conftest import poisoned_copy, tiny_config

EPOCHS = 4
SETTINGS = {"batch_size": 8, "num_threads": 1, "device": "cpu", "patience": 10, "seed": 3}
TWO = DistributedConfig(processes=2, backend="gloo")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def one_process(small_training_set, tmp_path_factory):
    """The single-process model the distributed runs are compared with (augmentation on)."""
    train_config = TrainConfig(epochs=EPOCHS, **SETTINGS)
    return train_model(
        tiny_config(), train_config, small_training_set, tmp_path_factory.mktemp("one")
    )


def assert_same_weights(got: torch.nn.Module, want: torch.nn.Module, **tolerance) -> None:
    for (name, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name, **(tolerance or {"atol": 0, "rtol": 0}))


def val_chi2(result) -> list[float]:
    return [entry["val_chi2"] for entry in result.history]


def test_ddp_steps_share_out_the_single_process_batches():
    one = epoch_steps(21, 8, seed=7)
    assert [len(step.batch) for step in one] == [8, 8, 5]
    assert sorted(np.concatenate([step.batch for step in one])) == list(range(21))
    two = [epoch_steps(21, 8, seed=7, ranks=Ranks(rank, 2)) for rank in range(2)]
    for single, first, second in zip(one, *two, strict=True):
        assert np.array_equal(first.batch, single.batch)
        assert sorted([*first.mine, *second.mine]) == sorted(single.batch)
    # Deterministic per seed, another order for another seed (epoch).
    again = epoch_steps(21, 8, seed=7, ranks=Ranks(0, 2))
    assert all(np.array_equal(a.mine, b.mine) for a, b in zip(two[0], again, strict=True))
    assert not np.array_equal(epoch_steps(21, 8, seed=8)[0].batch, one[0].batch)
    # A last batch smaller than the number of ranks is padded: every rank takes every step.
    short = [epoch_steps(9, 8, seed=1, ranks=Ranks(rank, 3))[-1] for rank in range(3)]
    assert [len(step.mine) for step in short] == [1, 1, 1]
    assert {int(step.mine[0]) for step in short} == {int(short[0].batch[0])}


def test_ddp_config_is_checked():
    assert DistributedConfig(processes=2).resolved_backend("cpu") == "gloo"
    assert DistributedConfig(processes=2).resolved_backend("cuda") == "nccl"
    with pytest.raises(ValueError, match="nccl backend needs device 'cuda'"):
        DistributedConfig(processes=2, backend="nccl").resolved_backend("cpu")
    with pytest.raises(ValueError, match="processes must be positive"):
        DistributedConfig(processes=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        DistributedConfig(backend="mpi")


def test_ddp_two_processes_train_the_one_process_model(one_process, small_training_set, tmp_path):
    train_config = TrainConfig(epochs=EPOCHS, **SETTINGS)
    messages: list[str] = []
    epochs_ended: list[int] = []
    first = train_model(
        tiny_config(), train_config, small_training_set, tmp_path / "a",
        log=messages.append, distributed=TWO, on_epoch_end=epochs_ended.append,
    )  # fmt: skip
    second = train_model(
        tiny_config(), train_config, small_training_set, tmp_path / "b", distributed=TWO
    )
    # Reproducible: the same seed and number of processes give the same weights.
    assert_same_weights(first.model, second.model)
    assert val_chi2(first) == val_chi2(second)
    # The same global batches, augmentation and gradient as one process: the same model, to
    # rounding (far inside the 5% the issue asks for).
    assert val_chi2(first) == pytest.approx(val_chi2(one_process), rel=1e-4)
    assert abs(first.best_val_chi2 / one_process.best_val_chi2 - 1) < 0.05
    assert_same_weights(first.model, one_process.model, atol=1e-4, rtol=1e-3)
    assert (first.n_train, first.n_val) == (one_process.n_train, one_process.n_val)
    assert (first.processes, one_process.processes) == (2, 1)
    assert first.galaxies_per_second > 0 and first.device == "cpu"
    # Rank 0 alone logs and writes: one line per epoch, one checkpoint file.
    assert any("on 2 processes (cpu)" in message for message in messages)
    assert [m.split(":")[0] for m in messages if m.startswith("epoch ")] == [
        f"epoch {epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)
    ]
    assert [path.name for path in (tmp_path / "a").iterdir()] == [CHECKPOINT_FILE]
    # The epoch callback runs here, once per epoch, as rank 0 reports it.
    assert epochs_ended == list(range(1, EPOCHS + 1))


def _ranks_left() -> list[psutil.Process]:
    """Processes forked by this process's forkserver that are still running."""
    forkservers = [
        child for child in psutil.Process().children() if "forkserver" in " ".join(child.cmdline())
    ]
    return [rank for server in forkservers for rank in server.children()]


def test_ddp_interrupted_run_resumes_with_one_process(one_process, small_training_set, tmp_path):
    train_config = TrainConfig(epochs=EPOCHS, **SETTINGS)

    def stop_after_epoch_two(message: str) -> None:
        if message.startswith("epoch 2/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_model(tiny_config(), train_config, small_training_set, tmp_path,
                    log=stop_after_epoch_two, distributed=TWO)  # fmt: skip
    deadline = time.monotonic() + 10
    while _ranks_left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ranks_left(), "the ranks outlived the interrupted training call"
    # The launcher stops the ranks as soon as it reads rank 0's "epoch 2" line; on a busy
    # machine they may have checkpointed another epoch by then.
    stopped_at = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["epoch"]
    assert 2 <= stopped_at <= EPOCHS

    # The checkpoint holds the global state: one process resumes it where two left off.
    messages: list[str] = []
    resumed = train_model(
        tiny_config(), train_config, small_training_set, tmp_path, log=messages.append
    )
    assert resumed.resumed_from_epoch == stopped_at
    assert any(f"resuming from the checkpoint of epoch {stopped_at}" in m for m in messages)
    assert [entry["epoch"] for entry in resumed.history] == list(range(1, EPOCHS + 1))
    assert val_chi2(resumed) == pytest.approx(val_chi2(one_process), rel=1e-4)
    assert_same_weights(resumed.model, one_process.model, atol=1e-4, rtol=1e-3)


def test_ddp_rank_error_is_raised_with_its_type(small_training_set, tmp_path):
    copy, victim = poisoned_copy(small_training_set, tmp_path, 5, (2, 5, 5), np.inf)
    with pytest.raises(TrainingError, match=f"non-finite input.*{victim}.*process [01]"):
        train_model(tiny_config(), TrainConfig(epochs=1, **SETTINGS), copy, tmp_path / "ck",
                    distributed=TWO)  # fmt: skip
