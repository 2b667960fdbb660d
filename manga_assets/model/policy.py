"""When a model is retrained, and when new galaxies are embedded with the model already trained.

A trained model records a *signature* (code version, architecture, training hyper-parameters) and
how many galaxies it was trained on. It is retrained when asked to, when its signature differs
from the one wanted now, or when the training set has grown by at least ``growth_to_retrain``
since; otherwise new plates are embedded with it. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


def signature_digest(signature: dict) -> str:
    """A short, order-independent digest of a JSON-safe signature."""
    text = json.dumps(signature, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to train, and why (shown in the model asset's metadata)."""

    retrain: bool
    reason: str


def retraining_decision(
    previous: dict | None,
    signature: dict,
    n_galaxies: int,
    *,
    growth_to_retrain: float,
    force: bool = False,
) -> RetrainDecision:
    """Decide whether to retrain, given the previous model's metrics (None if there is none).

    Parameters
    ----------
    previous : dict or None
        ``metrics.json`` of the saved model, with ``signature_digest`` and ``n_galaxies_trained``.
    signature : dict
        What the model would be trained with now.
    n_galaxies : int
        Galaxies in the training set now.
    growth_to_retrain : float
        Relative growth of the training set that triggers retraining (0.25: a quarter more).
    force : bool
        Retrain whatever the rest says.
    """
    if force:
        return RetrainDecision(True, "retraining was requested")
    if previous is None:
        return RetrainDecision(True, "no trained model yet")
    if previous.get("signature_digest") != signature_digest(signature):
        return RetrainDecision(
            True, "code version or hyper-parameters changed since the model was trained"
        )
    trained_on = int(previous.get("n_galaxies_trained", 0))
    growth = n_galaxies / trained_on - 1 if trained_on else float("inf")
    if growth >= growth_to_retrain:
        return RetrainDecision(
            True,
            f"the training set grew by {growth:.0%} ({trained_on} -> {n_galaxies} galaxies), "
            f"at least the {growth_to_retrain:.0%} that triggers retraining",
        )
    return RetrainDecision(
        False,
        f"unchanged signature and the training set grew by {growth:.0%} "
        f"({trained_on} -> {n_galaxies} galaxies), below {growth_to_retrain:.0%}: "
        "new galaxies are embedded with the current model",
    )
