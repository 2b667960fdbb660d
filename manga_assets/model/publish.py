"""Train a model or keep the saved one, and decide whether it may be published.

The science of the ``{variant}/model`` asset, without Dagster: the signature a model is trained
with, the retraining decision (`manga_assets.model.policy`), the training, the quality gate
(`manga_assets.model.quality`) and the model's identity. The asset reads its settings, calls
:func:`train_or_keep`, and reports what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manga_assets.model.policy import RetrainDecision, retraining_decision, signature_digest

# Training settings that define a model; patience, device and threads do not.
SIGNATURE_FIELDS = (
    "epochs", "max_steps", "batch_size", "learning_rate", "warmup_fraction", "weight_decay",
    "seed", "augment",
)  # fmt: skip


@dataclass(frozen=True)
class GateSettings:
    """The quality gate's bar (`manga_assets.model.quality.assess_model`)."""

    min_fev: float
    min_galaxies_to_block: int


@dataclass(frozen=True)
class Outcome:
    """A trained or kept model, its identity, and the gate's report.

    ``metrics`` is what ``metrics.json`` holds (training metrics, ``quality``: the gate's report,
    ``signature_digest``, ``n_galaxies_trained`` and ``model_id``); for a kept model, the metrics
    saved when it was trained.
    """

    model: Any
    config: Any
    metrics: dict
    decision: RetrainDecision
    n_galaxies: int

    @property
    def model_id(self) -> str:
        return self.metrics["model_id"]

    @property
    def quality(self) -> dict:
        return self.metrics["quality"]

    @property
    def passed(self) -> bool:
        return bool(self.quality["passed"])

    def gate_report(self) -> dict[str, Any]:
        """The gate's figures, as its check reports them."""
        quality = self.quality
        return {
            "fev": quality["fev"],
            "fev_low": quality["fev_low"],
            "fev_high": quality["fev_high"],
            "min_fev": quality["min_fev"],
            "val_chi2_model": quality["chi2_model"],
            "val_chi2_weighted_pca": quality["chi2_pca"],
            "fev_weighted_pca": quality["fev_pca"],
            "fev_pooled": quality["fev_pooled"],
            "val_chi2_mean_map": quality["chi2_mean_map"],
            "val_galaxies": quality["n_val"],
            "blocking": quality["blocking"],
            "warnings": "; ".join(quality["problems"]) or "none",
        }

    def report(self) -> dict[str, Any]:
        """The decision, the training and the fit, as scalars (what the asset reports)."""
        metrics = self.metrics
        return {
            "retrained": self.decision.retrain,
            "retrain_reason": self.decision.reason,
            "model_id": self.model_id,
            "galaxies_trained_on": metrics["n_galaxies_trained"],
            "galaxies_in_training_set": self.n_galaxies,
            "device": metrics["device"],
            "training_processes": metrics.get("processes", 1),
            "parameters": metrics["n_parameters"],
            "epochs_run": len(metrics["history"]),
            "resumed_from_epoch": metrics["resumed_from_epoch"] or 0,
            "best_epoch": metrics["best_epoch"],
            "best_val_chi2": metrics["best_val_chi2"],
            "mean_map_val_chi2": metrics["baseline_val_chi2"],
            "fev": self.quality["fev"],
            "best_val_fev": metrics["best_val_fev"],
            "active_latent_dims": self.quality["active_latent_dims"],
            "training_seconds": metrics["wall_seconds"],
            "galaxies_per_second": metrics["galaxies_per_second"],
            "train_galaxies": metrics["n_train"],
            "val_galaxies": metrics["n_val"],
            "stopped_early": metrics["stopped_early"],
        }


def model_signature(code_version: str, model_config, train_config) -> dict:
    """What defines a model: the code version, the architecture and the training settings."""
    return {
        "code_version": code_version,
        "model": model_config.to_dict(),
        "training": {k: v for k, v in train_config.to_dict().items() if k in SIGNATURE_FIELDS},
    }


def model_identity(signature: dict, training_set_fingerprint: str, best_val_chi2: float) -> str:
    """A model's identity: its signature, the training set and the fit it reached."""
    return signature_digest(
        {
            "signature": signature_digest(signature),
            "training_set": training_set_fingerprint,
            "chi2": best_val_chi2,
        }
    )


def saved_metrics(model_dir: Path) -> dict | None:
    """``metrics.json`` of the model saved in ``model_dir``, if it has a retraining signature."""
    path = Path(model_dir) / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return metrics if "signature_digest" in metrics else None


def gate_failure_message(quality: dict) -> str:
    """What a failed gate says, and what to do about it."""
    return (
        f"{'; '.join(quality['problems'])}. The model was not published. Train longer "
        f"(`manga-assets run --epochs`), on more galaxies, or with a larger latent_dim; a "
        f"short run made only to time the pipeline may lower the bar (`--min-fev`)"
    )


def train_or_keep(
    model_config,
    train_config,
    *,
    code_version: str,
    training_set_dir: Path,
    model_dir: Path,
    checkpoint_dir: Path,
    gate: GateSettings,
    growth_to_retrain: float,
    force: bool = False,
    distributed=None,
    log: Callable[[str], None] = lambda message: None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> Outcome:
    """Retrain when `retraining_decision` says so and gate the new model, else load the saved one.

    Nothing is written here: the caller publishes the model only when ``Outcome.passed``.
    """
    from manga_assets.model.checkpoint import load_model
    from manga_assets.model.dataset import open_training_set
    from manga_assets.model.quality import assess_model
    from manga_assets.model.train import train_model

    signature = model_signature(code_version, model_config, train_config)
    training_set = open_training_set(training_set_dir)
    n_galaxies = len(training_set.index)
    previous = saved_metrics(model_dir)
    decision = retraining_decision(
        previous, signature, n_galaxies, growth_to_retrain=growth_to_retrain, force=force
    )
    log(f"{model_config.variant}: {'retraining' if decision.retrain else 'keeping'} the model: "
        f"{decision.reason}")  # fmt: skip
    if not decision.retrain:
        saved_model, saved_config = load_model(model_dir)
        return Outcome(saved_model, saved_config, previous, decision, n_galaxies)

    result = train_model(
        model_config,
        train_config,
        training_set_dir,
        checkpoint_dir,
        log=log,
        fresh=force,
        distributed=distributed,
        on_epoch_end=on_epoch_end,
    )
    quality = assess_model(
        result.model,
        training_set,
        min_fev=gate.min_fev,
        min_galaxies_to_block=gate.min_galaxies_to_block,
    )
    metrics = {
        **result.metrics(),
        "quality": quality.to_dict(),
        "learned_floor": result.model.line_floors(),
        "signature_digest": signature_digest(signature),
        "n_galaxies_trained": n_galaxies,
        "model_id": model_identity(signature, training_set.fingerprint, result.best_val_chi2),
    }
    return Outcome(result.model, model_config, metrics, decision, n_galaxies)
