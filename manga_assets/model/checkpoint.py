"""Saving and loading trained models: ``model.pt`` (state_dict), ``config.json``, ``metrics.json``.

One format only: the state_dict of the unwrapped module (never a pickled object, never a
``torch.compile`` wrapper's prefixed keys) next to the `ModelConfig` that rebuilds the module.
Loading uses ``torch.load(weights_only=True)``, which refuses arbitrary pickled code.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from manga_assets.atomic import publish_directory, resolve_published, temporary_directory
from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A saved model or training checkpoint that cannot be used; the message says what to do."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (whose state_dict keys carry a prefix)."""
    return getattr(model, "_orig_mod", model)


def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists, numpy/torch scalars as Python numbers, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_model(
    model_dir: Path | str, model: nn.Module, model_config: ModelConfig, metrics: dict
) -> Path:
    """Write a trained model to ``model_dir`` atomically.

    The three files are written into a temporary sibling directory which is then published as
    ``model_dir`` (:func:`manga_assets.atomic.publish_directory`: a versioned directory and a
    symbolic link swapped in one rename), so ``model_dir`` is never missing and readers see the
    old model or the new one, never a mix.

    Parameters
    ----------
    model_dir : Path
        Directory to create or replace.
    model : nn.Module
        The trained `ConvLSTMAutoencoder` (compiled wrappers are unwrapped).
    model_config : ModelConfig
    metrics : dict
        JSON-safe after `json_safe` (e.g. ``TrainResult.metrics()``).

    Returns
    -------
    Path
        ``model_dir``.
    """
    model_dir = Path(model_dir)
    tmp_dir = temporary_directory(model_dir)
    try:
        state = {key: value.detach().cpu() for key, value in unwrap(model).state_dict().items()}
        torch.save(state, tmp_dir / MODEL_FILE)
        config = {"format_version": FORMAT_VERSION, "model": model_config.to_dict()}
        (tmp_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        (tmp_dir / METRICS_FILE).write_text(json.dumps(json_safe(metrics), indent=2))
        publish_directory(tmp_dir, model_dir, durable=True)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return model_dir


def load_state_file(path: Path, what_to_do: str) -> dict:
    """``torch.load(path, weights_only=True)``, with unreadable files as `CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; {what_to_do}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False, which would run arbitrary code.
        raise CheckpointError(
            f"{path} is corrupted or holds pickled objects rather than plain tensors (refused by "
            f"weights-only loading); {what_to_do}"
        ) from error
    except Exception as error:  # torch raises many types for truncated or foreign files
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{path} is corrupted or truncated ({type(error).__name__}: {first_line}); {what_to_do}"
        ) from error


def load_model(
    model_dir: Path | str, device: str = "cpu"
) -> tuple[ConvLSTMAutoencoder, ModelConfig]:
    """Rebuild a model saved by `save_model`, in evaluation mode.

    Parameters
    ----------
    model_dir : Path
    device : str
        Where to put the model (default "cpu").

    Returns
    -------
    model : ConvLSTMAutoencoder
    config : ModelConfig

    Raises
    ------
    CheckpointError
        If a file is missing, truncated or corrupted, or the weights do not fit the architecture
        in config.json (e.g. written by another version of the model).
    """
    # Pin one published version: config and weights must come from the same model.
    model_dir = resolve_published(model_dir)
    remedy = f"delete {model_dir} and retrain the model (re-materialise the model asset)"
    config_path = model_dir / CONFIG_FILE
    try:
        saved = json.loads(config_path.read_text())
        if saved.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format version {saved.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        config = ModelConfig.from_dict(saved["model"])
    except FileNotFoundError as error:
        raise CheckpointError(f"{config_path} does not exist; {remedy}") from error
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{config_path} is not a valid model configuration ({error}); {remedy}"
        ) from error
    state = load_state_file(model_dir / MODEL_FILE, remedy)
    model = ConvLSTMAutoencoder(config)
    load_weights(model, state, model_dir / MODEL_FILE, remedy)
    return model.to(device).eval(), config


def load_weights(model: nn.Module, state: Any, path: Path, what_to_do: str) -> None:
    """Load a state_dict, turning key or shape mismatches into `CheckpointError`."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict of tensors; {what_to_do}")
    expected = unwrap(model).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shapes = [
        f"{key}: saved {tuple(state[key].shape)}, model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if state[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong_shapes:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shape mismatch {wrong_shapes[:3]}" if wrong_shapes else "",
            )
            if part
        )
        raise CheckpointError(
            f"{path} was written by a different architecture than its configuration describes "
            f"({details}); {what_to_do}"
        )
    unwrap(model).load_state_dict(state)
