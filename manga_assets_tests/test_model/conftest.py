"""Fixtures for the model tests: one torch thread and tiny cubes.

One thread, because the test machine is small and shared: with as many OpenMP threads as cores,
another busy process makes the threads spin at every barrier, and a 6-second training test took
300 seconds; with one thread it degrades gracefully.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from manga_assets.model.autoencoder import ModelConfig
from manga_assets.model.dataset import build_training_set, open_training_set
from manga_assets_tests.test_model.cubes import write_cubes

GRID = 16  # small maps keep the training tests within seconds
# Where the training tests train: CPU here; benchmarks/gpu.sh sets MANGA_TEST_DEVICE=cuda.
DEVICE = os.environ.get("MANGA_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda"):
    # Tests compare trainings and batchings to 1e-5: float32 kernels (no TF32), chosen
    # deterministically (gpu.sh sets CUBLAS_WORKSPACE_CONFIG, which cuBLAS needs for that).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(variant: str = "ae", **overrides) -> ModelConfig:
    """A small model on GRID x GRID maps."""
    values = {
        "variant": variant,
        "grid": GRID,
        "encoder_channels": (8, 16),
        "latent_dim": 8,
    }
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="session")
def easy_training_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 synthetic galaxies on 16x16 maps, normalised into a training set."""
    root = tmp_path_factory.mktemp("easy")
    cubes = write_cubes(root, 96, grid=GRID, seed=1)
    build_training_set(cubes, root / "training_set", grid=GRID, seed=0)
    return root / "training_set"


@pytest.fixture(scope="session")
def small_training_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic galaxies on 16x16 maps: for tests of the training mechanics, not quality."""
    root = tmp_path_factory.mktemp("small")
    cubes = write_cubes(root, 24, grid=GRID, seed=2)
    build_training_set(cubes, root / "training_set", grid=GRID, seed=0)
    return root / "training_set"


@pytest.fixture(scope="session")
def trained_ae(easy_training_set: Path, tmp_path_factory: pytest.TempPathFactory):
    """An AE trained long enough on the easy set to beat the weighted PCA (about a minute)."""
    from manga_assets.model.train import TrainConfig, train_model

    config = TrainConfig(
        epochs=36, learning_rate=5e-3, batch_size=8, patience=36, seed=0, num_threads=1,
        device=DEVICE,
    )  # fmt: skip
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_model(
            tiny_config("ae"), config, easy_training_set, tmp_path_factory.mktemp("trained_ae")
        )
    finally:
        torch.set_num_threads(previous)


def poisoned_copy(
    training_set: Path, directory: Path, nth: int, pixel: tuple[int, int, int], value: float
) -> tuple[Path, str]:
    """A copy of ``training_set`` whose ``nth`` training galaxy holds ``value`` at ``pixel``.

    Returns the copy and the poisoned galaxy's plate-IFU.
    """
    copy = directory / "ts"
    shutil.copytree(training_set, copy)
    index = open_training_set(copy).index
    victim = index[index["split"] == "train"].iloc[nth]
    flux = np.load(copy / "flux.npy", mmap_mode="r+")
    flux[(victim["row"], *pixel)] = value
    flux.flush()
    del flux
    return copy, victim.plateifu
