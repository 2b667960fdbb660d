"""The step budget from the command line and the model assets' config to the trainer."""

from __future__ import annotations

import pytest

from manga_assets.cli import _training_overrides, build_parser
from manga_assets.defs.assets.model import ModelTrainingConfig, _training_settings
from manga_assets.model import defaults


@pytest.mark.parametrize(
    ("arguments", "overrides"),
    [
        ([], None),
        (["--max-steps", "300"], {"max_steps": 300}),
        (["--max-steps", "0"], {"max_steps": None}),
        (["--max-steps", "300", "--min-fev", "0.2"], {"max_steps": 300, "min_fev": 0.2}),
    ],
)
def test_run_passes_the_step_budget_to_both_models(arguments, overrides):
    args = build_parser().parse_args(["run", *arguments])
    assert _training_overrides(args) == overrides


@pytest.mark.parametrize("max_steps", [7, None])
def test_the_model_asset_config_reaches_the_trainer(max_steps):
    _, training, _ = _training_settings("ae", ModelTrainingConfig(max_steps=max_steps))
    assert training.max_steps == max_steps


def test_the_model_asset_trains_with_the_default_budget():
    _, training, _ = _training_settings("ae", ModelTrainingConfig())
    assert training.max_steps == defaults.MAX_STEPS
