"""The IO manager that stores trained models under ``products/models/{variant}/``.

A model is saved once, in one format (state_dict + JSON config + JSON metrics, written by
:func:`manga_assets.model.checkpoint.save_model`), and downstream assets receive it as an asset
input, never as "the newest file on disk". torch is imported only when a model is stored or
loaded.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from manga_assets.atomic import resolve_published
from manga_assets.defs.step_lock import HoldsDataDirLock
from manga_assets.layout import DataLayout


@dataclass
class TrainedModel:
    """A trained ConvLSTM autoencoder with its configuration and training metrics."""

    model: Any
    config: Any
    metrics: dict


class ModelIOManager(HoldsDataDirLock, dg.ConfigurableIOManager):
    """Saves :class:`TrainedModel` values and loads them back for inference (holding the data
    directory's lock, shared, as every writing step does: :mod:`manga_assets.defs.step_lock`)."""

    data_dir: str

    def _model_dir(self, key: dg.AssetKey) -> Path:
        return DataLayout(Path(self.data_dir)).model_dir(key.path[0])

    def handle_output(self, context: dg.OutputContext, obj: TrainedModel) -> None:
        from manga_assets.model.checkpoint import save_model

        if not isinstance(obj, TrainedModel):
            raise TypeError(
                f"ModelIOManager stores TrainedModel values; "
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}"
            )
        path = save_model(self._model_dir(context.asset_key), obj.model, obj.config, obj.metrics)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> TrainedModel:
        import json

        from manga_assets.model.checkpoint import METRICS_FILE, load_model

        # models/{variant} is a link swapped when a model is published: resolve it once so the
        # weights, config and metrics all come from the same version.
        model_dir = resolve_published(self._model_dir(context.asset_key))
        model, config = load_model(model_dir)
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
        return TrainedModel(model, config, metrics)
