"""The model group: the training set, the two ConvLSTM autoencoders, and per-plate latents."""

import base64
import os

import dagster as dg
import numpy as np
import pandas as pd

from manga_assets.defs.constants import (
    GPU_STEP_TAGS,
    MODEL,
    OWNER,
    PLATES_PER_RUN,
    VARIANTS,
)
from manga_assets.defs.crash import crash_after_epoch, crash_point
from manga_assets.defs.data_versions import output_with_plate_versions
from manga_assets.defs.io_managers import PRODUCT_PATH, PROVENANCE
from manga_assets.defs.markdown import markdown_table
from manga_assets.defs.model_io import TrainedModel
from manga_assets.defs.partitions import plate_partitions
from manga_assets.defs.resources import DataDirResource
from manga_assets.layout import TRAINING_SET_DIR
from manga_assets.model import defaults
from manga_assets.model.publish import Outcome
from manga_assets.model.typical_fit import MIN_TYPICAL_GALAXIES
from manga_assets.provenance import (
    LATENTS_CODE_VERSION,
    TRAINING_SET_CODE_VERSION,
    cube_digests,
    digest,
    embeddable,
    latents_file_provenance,
    latents_provenance,
    set_digest,
    training_set_provenance,
)
from manga_assets.sas.paths import PlateIFU

# 3: likelihood with a learned per-line floor, bounded per galaxy; the typical galaxy chooses
#    the epoch and passes the gate.
MODEL_CODE_VERSION = "3"


class TrainingSetConfig(dg.Config):
    """The seeded train/validation split."""

    seed: int = 0
    val_fraction: float = 0.15


def _usable_cubes(line_cubes: dict[str, pd.DataFrame]) -> pd.DataFrame:
    features = pd.concat(line_cubes.values(), ignore_index=True)
    return features[features["status"] == "ok"].sort_values("plateifu").reset_index(drop=True)


@dg.asset(
    group_name=MODEL,
    owners=[OWNER],
    kinds={"numpy"},
    code_version=TRAINING_SET_CODE_VERSION,
)
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    line_cubes: dict[str, pd.DataFrame],
    data_dir: DataDirResource,
) -> dg.MaterializeResult:
    """Every cube, normalised for the network, in one memory-mapped array with a split index."""
    from manga_assets.model.dataset import build_training_set

    layout = data_dir.layout
    cubes = _usable_cubes(line_cubes)
    summary = build_training_set(
        ((p, layout.cube(PlateIFU.parse(p))) for p in cubes["plateifu"]),
        layout.products / TRAINING_SET_DIR,
        seed=config.seed,
        val_fraction=config.val_fraction,
        log=context.log.info,
        # What the runner compares with the current cubes to decide whether to rebuild it.
        made_from=training_set_provenance(cubes, TRAINING_SET_CODE_VERSION, config.model_dump()),
    )
    crash_point("training_set_built")
    excluded = pd.DataFrame(
        [{"plateifu": e.plateifu, "reason": e.reason} for e in summary.excluded],
        columns=["plateifu", "reason"],
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(summary.fingerprint[:16]),
        metadata={
            **summary.to_metadata(),
            "path": dg.MetadataValue.path(str(summary.path)),
            "excluded": len(excluded),
            "excluded_cubes": dg.MetadataValue.md(markdown_table(excluded)),
        },
    )


class DistributedTrainingConfig(dg.Config):
    """Data-parallel training with torch DDP: processes on the step's machine, and their backend.

    One process (the default) starts nothing. With more, each takes its share of every batch of
    ``batch_size`` galaxies (`manga_assets.model.distributed`); the model is the same.
    """

    processes: int = 1
    # gloo (CPU), nccl (CUDA, one GPU per process), or auto: nccl when training on CUDA.
    backend: str = "auto"


class ModelTrainingConfig(dg.Config):
    """Hyper-parameters of one autoencoder; every field reaches the model, trainer or gate."""

    epochs: int = defaults.EPOCHS
    # Most optimisation steps: large releases train fewer epochs (TrainConfig.max_steps);
    # None lets every epoch run.
    max_steps: int | None = defaults.MAX_STEPS
    batch_size: int = defaults.BATCH_SIZE
    learning_rate: float = defaults.LEARNING_RATE
    latent_dim: int = defaults.LATENT_DIM
    beta: float = defaults.BETA
    seed: int = defaults.SEED
    patience: int = defaults.PATIENCE
    device: str = defaults.DEVICE
    # On a GPU, replay each batch's forward and backward as CUDA graphs (TrainConfig.cuda_graphs).
    cuda_graphs: bool = False
    distributed: DistributedTrainingConfig = DistributedTrainingConfig()
    force_retrain: bool = False
    growth_to_retrain: float = 0.25
    # The quality gate's bar (manga_assets.model.quality): the lower end of the 95% interval of
    # the share of the mean map's chi-square excess that the model removes.
    min_fev: float = defaults.MIN_FEV
    # Below this many validation galaxies the gate's interval is too wide to block on: it warns.
    gate_min_val_galaxies: int = MIN_TYPICAL_GALAXIES


def step_threads() -> int:
    """Torch threads for one step: ``MANGA_TORCH_THREADS``, else the CPUs this process may use.

    Capping matters when several steps run at once (the multiprocess executor): each would
    otherwise start one thread per core and they would fight over the cores.
    """
    configured = os.environ.get("MANGA_TORCH_THREADS")
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _loss_curve_markdown(history: pd.DataFrame) -> str:
    from manga_assets.analysis.figures import loss_curve_png

    encoded = base64.b64encode(loss_curve_png(history)).decode()
    return f"![loss curve](data:image/png;base64,{encoded})"


def _training_settings(variant: str, config: ModelTrainingConfig):
    """The core's model, training and distribution settings from the asset's config."""
    from manga_assets.model.autoencoder import ModelConfig
    from manga_assets.model.distributed import DistributedConfig
    from manga_assets.model.train import TrainConfig

    distributed = DistributedConfig(
        processes=config.distributed.processes, backend=config.distributed.backend
    )
    training = TrainConfig(
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        patience=config.patience,
        device=config.device,
        cuda_graphs=config.cuda_graphs,
        # The step's CPUs are shared out between its training processes.
        num_threads=max(1, step_threads() // distributed.processes),
    )
    model = ModelConfig(variant=variant, latent_dim=config.latent_dim, beta=config.beta)
    return model, training, distributed


def _model_metadata(outcome: Outcome) -> dict:
    """What the model's materialisation shows: the core's report, the losses and learned floor."""
    history = pd.DataFrame(outcome.metrics["history"])
    return {
        **outcome.report(),
        "learned_floor": dg.MetadataValue.json(outcome.metrics.get("learned_floor", {})),
        "losses": dg.MetadataValue.md(markdown_table(history.round(5))),
        # Drawn when the model is trained: a kept model's curve is on the materialisation that
        # trained it, and drawing costs a no-change rerun seconds.
        **(
            {"loss_curve": dg.MetadataValue.md(_loss_curve_markdown(history))}
            if outcome.decision.retrain
            else {}
        ),
    }


def build_model_asset(variant: str) -> dg.AssetsDefinition:
    """The ``{variant}/model`` asset: a trained ConvLSTM autoencoder of that variant."""
    check_name = "quality_gate"

    @dg.asset(
        key=[variant, "model"],
        group_name=MODEL,
        owners=[OWNER],
        kinds={"pytorch"},
        code_version=MODEL_CODE_VERSION,
        deps=["training_set"],
        io_manager_key="model_io_manager",
        description=f"The trained 2DConvLSTM-{'vAE' if variant == 'vae' else 'AE'}.",
        check_specs=[dg.AssetCheckSpec(check_name, asset=[variant, "model"], blocking=True)],
        # On Kubernetes, training runs in a pod on a GPU node (deploy/README.md).
        op_tags=GPU_STEP_TAGS,
    )
    def model(
        context: dg.AssetExecutionContext, config: ModelTrainingConfig, data_dir: DataDirResource
    ):
        from manga_assets.model.publish import GateSettings, gate_failure_message, train_or_keep

        layout = data_dir.layout
        model_dir = layout.model_dir(variant)
        model_config, train_config, distributed = _training_settings(variant, config)
        outcome = train_or_keep(
            model_config,
            train_config,
            code_version=MODEL_CODE_VERSION,
            training_set_dir=layout.products / TRAINING_SET_DIR,
            model_dir=model_dir,
            checkpoint_dir=layout.products / "checkpoints" / variant,
            gate=GateSettings(config.min_fev, config.gate_min_val_galaxies),
            growth_to_retrain=config.growth_to_retrain,
            force=config.force_retrain,
            distributed=distributed,
            log=context.log.info,
            on_epoch_end=crash_after_epoch,
        )
        for problem in outcome.quality["problems"]:
            context.log.warning(f"{variant}/model: {problem}")
        gate = dg.AssetCheckResult(
            check_name=check_name,
            passed=outcome.passed,
            description=None if outcome.passed else gate_failure_message(outcome.quality),
            metadata=outcome.gate_report(),
        )
        if not outcome.passed:
            # The gate runs before publication: a failing model never replaces models/{variant}
            # and so is never embedded with, here or by the sensor's runs.
            yield gate
            raise dg.Failure(
                description=f"{variant}/model was not published (the previous model, if any, "
                f"stays in {model_dir})",
                metadata={
                    "fev_low": outcome.quality["fev_low"],
                    "min_fev": outcome.quality["min_fev"],
                },
            )
        yield dg.Output(
            TrainedModel(outcome.model, outcome.config, outcome.metrics),
            data_version=dg.DataVersion(outcome.model_id),
            metadata=_model_metadata(outcome),
        )
        yield gate

    return model


def build_latents_asset(variant: str) -> dg.AssetsDefinition:
    """The ``{variant}/latents`` asset: every galaxy of a plate embedded by the trained model."""

    @dg.asset(
        key=[variant, "latents"],
        group_name=MODEL,
        owners=[OWNER],
        kinds={"parquet"},
        code_version=LATENTS_CODE_VERSION,
        partitions_def=plate_partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(PLATES_PER_RUN),
        ins={"model": dg.AssetIn([variant, "model"]), "line_cubes": dg.AssetIn("line_cubes")},
        metadata={PRODUCT_PATH: f"{variant}/latents/{{partition}}.parquet"},
        io_manager_key="products_io_manager",
        description=f"Latent vector and reconstruction errors of every galaxy ({variant}).",
    )
    def latents(
        context: dg.AssetExecutionContext,
        model: TrainedModel,
        line_cubes: dict[str, pd.DataFrame],
        data_dir: DataDirResource,
    ):
        import torch

        from manga_assets.cubes.extract import read_cube
        from manga_assets.model.inference import embed

        torch.set_num_threads(step_threads())
        layout = data_dir.layout
        model_id = str(model.metrics["model_id"])
        tables, provenance, skipped = {}, {}, []
        for plate, features in line_cubes.items():
            usable = embeddable(features)
            skipped += features.loc[~features.index.isin(usable.index), "plateifu"].tolist()
            plateifus = usable["plateifu"].tolist()
            cubes = [read_cube(layout.cube(PlateIFU.parse(p))) for p in plateifus]
            made_from = cube_digests(usable)
            tables[plate] = _latent_table(embed, model, plateifus, cubes, made_from)
            provenance[plate] = latents_file_provenance(
                LATENTS_CODE_VERSION, model_id, set_digest(plateifus, made_from)
            )
        every = pd.concat(tables.values(), ignore_index=True)
        # A plate's data version is the digest of its provenance (latents code, model, cubes),
        # which the IO manager writes into the plate's file; recorded per plate in runs over
        # many plates too (manga_assets.defs.data_versions).
        yield from output_with_plate_versions(
            context,
            tables,
            {plate: digest(*record.values()) for plate, record in provenance.items()},
            metadata={
                PROVENANCE: dg.MetadataValue.json(provenance),
                "model_id": model_id,
                "plates_in_run": len(tables),
                "galaxies_in_run": len(every),
                "without_cube": len(skipped),
                "median_reduced_chi2": float(every["recon_error"].median()) if len(every) else 0.0,
            },
        )

    return latents


def _latent_table(
    embed, model: TrainedModel, plateifus: list[str], cubes: list, made_from: list[str]
) -> pd.DataFrame:
    """One row per galaxy: its latents and errors, the model that made them and its cube digest.

    ``made_from`` holds each cube's digest (:func:`manga_assets.provenance.cube_digests`); with
    ``model_id`` it lets any later run tell a row made by another model or from an older cube.
    """
    from manga_assets.model.inference import latents_table, latents_table_columns  # torch

    config = model.config
    if not cubes:
        return pd.DataFrame(columns=latents_table_columns(config.latent_dim, config.line_names))
    result = embed(
        model.model,
        config,
        np.stack([c.flux for c in cubes]),
        np.stack([c.ivar for c in cubes]),
        np.stack([c.mask for c in cubes]),
        lines=cubes[0].lines,
        plateifus=plateifus,
    )
    return latents_table(
        result, config, model_id=str(model.metrics["model_id"]), cube_digests=made_from
    )


def build_latent_table_asset(variant: str) -> dg.AssetsDefinition:
    """``{variant}/latent_table``: the latents of every plate in one table."""

    @dg.asset(
        key=[variant, "latent_table"],
        group_name=MODEL,
        owners=[OWNER],
        kinds={"parquet"},
        code_version=LATENTS_CODE_VERSION,
        ins={"latents": dg.AssetIn([variant, "latents"])},
        metadata={PRODUCT_PATH: f"{variant}/latents.parquet"},
        automation_condition=dg.AutomationCondition.eager(),
        io_manager_key="products_io_manager",
        description=f"The {variant} latents of all plates, gathered.",
    )
    def latent_table(
        context: dg.AssetExecutionContext, latents: dict[str, pd.DataFrame]
    ) -> dg.Output[pd.DataFrame]:
        table = pd.concat(latents.values(), ignore_index=True).sort_values("plateifu")
        provenance = latents_provenance(table)
        if "," in provenance["model_id"]:
            context.log.warning(
                f"{variant}/latent_table mixes latents of models {provenance['model_id']}: "
                "plates embedded by an older model are stale (manga-assets run embeds them again)"
            )
        return dg.Output(
            table.reset_index(drop=True),
            metadata={
                "galaxies": len(table),
                "model_id": provenance["model_id"],
                PROVENANCE: dg.MetadataValue.json(provenance),
            },
        )

    return latent_table


model_assets = [
    asset
    for variant in VARIANTS
    for asset in (
        build_model_asset(variant),
        build_latents_asset(variant),
        build_latent_table_asset(variant),
    )
]
