"""Training: a function from (model config, train config, training set, checkpoint dir) to a model.

The loop is deliberately plain (nanoGPT's ``train.py`` without the globals): AdamW on the
chi-square loss in units of the noise (+ beta KL for the VAE, see
`manga_assets.model.autoencoder`), a learning rate that warms up linearly and then follows a cosine
to a tenth of its peak, random sky symmetries and hidden pixels (random cells and sometimes a whole
line) as augmentation, a full pass over the validation split after every epoch, early stopping on
the typical validation galaxy's fit, and a checkpoint written atomically after every epoch.

Calling `train_model` again with the same configurations and the same training set resumes from
that checkpoint (``fresh=True`` starts from epoch 1 instead); each epoch draws its shuffling,
augmentation and VAE noise from generators seeded by (seed, epoch), and the learning rate is a
function of the step, so a resumed run repeats the epochs an uninterrupted run would have made.

With ``distributed=DistributedConfig(processes=N)`` the same loop runs in N processes with torch
DDP (`manga_assets.model.distributed`): each takes its share of every global batch, rank 0
alone writes the checkpoint, and a checkpoint resumes with any number of processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from manga_assets.atomic import atomic_path
from manga_assets.model import defaults
from manga_assets.model.augment import dihedral, hide_pixels, random_dihedral
from manga_assets.model.autoencoder import (
    ConvLSTMAutoencoder,
    ModelConfig,
    chi_square_terms,
    gaussian_kl,
    to_linear,
)
from manga_assets.model.checkpoint import (
    CheckpointError,
    json_safe,
    load_state_file,
    load_weights,
    unwrap,
)
from manga_assets.model.convlstm import set_compiled_steps
from manga_assets.model.cuda_graph import GraphedLosses
from manga_assets.model.dataset import (
    Batch,
    GalaxyMapsDataset,
    TrainingSet,
    TrainingSetError,
    nonfinite_galaxies,
    open_training_set,
)
from manga_assets.model.distributed import (
    DistributedConfig,
    Ranks,
    Step,
    default_threads,
    epoch_steps,
    rank_device,
    shard_of,
    spawn,
)
from manga_assets.model.resident import ResidentSplit, resident_by_default
from manga_assets.model.typical_fit import MIN_TYPICAL_GALAXIES, galaxy_fev, typical_fev

CHECKPOINT_FILE = "training_state.pt"
# A first run on a few plates has a few dozen training galaxies: with batches of 32 an epoch would
# be one or two optimiser steps, and early stopping would end training before it began.
MIN_STEPS_PER_EPOCH = 4
CHECKPOINT_FORMAT_VERSION = 4
# The learned floor's learning rate, in units of the weights' (see `parameter_groups`).
FLOOR_LEARNING_RATE_SCALE = 20.0
# Steps between two looks at whether the loss is still finite: each look waits for a GPU to
# finish the queued steps, so it is not made at every step.
STEPS_PER_LOSS_CHECK = 32


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. non-finite inputs or losses); the message names the galaxies."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train (nothing about the architecture).

    Parameters
    ----------
    epochs : int
        Most passes over the training split (default 24, from the measured validation curve in
        benchmarks/SCIENCE.md; the learning-rate schedule spans them).
    max_steps : int or None
        Most optimisation steps (default 1,500): a larger split trains for fewer epochs, as
        many whole ones as reach it (`planned_epochs`), and the schedule spans those. None:
        always `epochs`.
    batch_size : int
        Galaxies per optimisation step (default 32).
    learning_rate : float
        Peak AdamW step size (default 2e-3).
    warmup_fraction : float
        Share of the steps over which the learning rate rises linearly from a tenth of the peak
        (default 0.05); it then follows a cosine down to a tenth of the peak at the last epoch.
    weight_decay : float
        Decoupled weight decay (AdamW, default 1e-4).
    grad_clip : float
        Largest gradient norm; 0 disables clipping (default 1: LSTMs can have rare large steps).
    seed : int
        Seeds the weights, shuffling, augmentation and VAE noise (default 0).
    device : str
        "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".
    patience : int
        Stop after this many epochs without a better typical validation galaxy (default 8).
        With fewer than `MIN_TYPICAL_GALAXIES` validation galaxies with an FEV, every epoch
        counts as better: the last is kept.
    min_delta : float
        Smallest rise of the typical galaxy's validation FEV that counts as better (default 0).
    num_threads : int or None
        Torch CPU threads during training (restored afterwards); None keeps the current setting.
    augment : bool
        Apply a random one of the 8 sky symmetries to every training batch, and hide some valid
        pixels from the encoder (`manga_assets.model.augment.hide_pixels`; default True).
    compile : bool
        Run the ConvLSTM gate arithmetic as kernels compiled by ``torch.compile`` (one per step
        forward and one backward instead of about ten each). Needs a C++ compiler (CPU) or
        Triton (CUDA); default False.
    bf16 : bool
        bfloat16 autocast for the forward pass (CUDA; default False).
    resident_data : bool or None
        Copy the training split onto the training device once and gather every batch there
        (`manga_assets.model.resident`). None (default): on a GPU when the split takes under half
        its free memory, never on the CPU. The batches, and so the model, are the same.
    cuda_graphs : bool
        Replay the forward and backward of every full batch as CUDA graphs
        (`manga_assets.model.cuda_graph`; one process on a GPU, with the data resident; default
        False until benchmarks/gpu.sh has measured it).
    """

    epochs: int = defaults.EPOCHS
    max_steps: int | None = defaults.MAX_STEPS
    batch_size: int = defaults.BATCH_SIZE
    learning_rate: float = defaults.LEARNING_RATE
    warmup_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    patience: int = defaults.PATIENCE
    min_delta: float = 0.0
    num_threads: int | None = None
    augment: bool = True
    compile: bool = False
    bf16: bool = False
    resident_data: bool | None = None
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError(
                f"epochs, batch_size and patience must be positive, got {self.epochs}, "
                f"{self.batch_size}, {self.patience}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive or None, got {self.max_steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be positive or None, got {self.num_threads}")

    def planned_epochs(self, steps_per_epoch: int) -> int:
        """The epochs this schedule trains: `epochs`, fewer where they would pass `max_steps`."""
        if self.max_steps is None:
            return self.epochs
        return max(1, min(self.epochs, math.ceil(self.max_steps / steps_per_epoch)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)

    def resume_key(self) -> dict:
        """The fields that must match for a checkpoint to be resumed.

        Patience, device, threads, compilation and where the data lie may change between runs:
        they do not change what the finished epochs computed. Epochs and the step budget do,
        through the learning-rate schedule.
        """
        values = self.to_dict()
        for name in (
            "patience", "min_delta", "device", "num_threads", "compile", "resident_data",
            "cuda_graphs",
        ):
            values.pop(name)
        return values


@dataclass
class TrainResult:
    """What `train_model` produced.

    Attributes
    ----------
    model : ConvLSTMAutoencoder
        The weights of the best epoch, on the CPU, in evaluation mode.
    history : list of dict
        Per epoch: epoch, learning_rate, train_chi2, train_kl, train_total, val_fev, val_chi2,
        val_kl, val_total, seconds, galaxies_per_second.
    best_epoch : int
        1-based epoch whose typical validation galaxy is fitted best (highest median FEV,
        `manga_assets.model.typical_fit`): one bright odd galaxy cannot choose the epoch.
    best_val_fev : float
        That median FEV.
    best_val_chi2, best_val_total : float
        Validation chi-square per valid pixel and total loss at the best epoch (pooled).
    baseline_val_chi2 : float
        `baseline_chi_square` of the training set: the mean-map predictor's chi-square per
        valid pixel over the validation split.
    wall_seconds : float
        Duration of this call.
    galaxies_per_second : float
        Training throughput over all epochs in the history.
    device : str
    n_parameters : int
    n_train, n_val : int
    stopped_early : bool
    resumed_from_epoch : int or None
        Last epoch of the checkpoint this call resumed from.
    processes : int
        Training processes of this call (DDP ranks; 1 without `DistributedConfig`).
    """

    model: ConvLSTMAutoencoder
    history: list[dict]
    best_epoch: int
    best_val_fev: float
    best_val_chi2: float
    best_val_total: float
    baseline_val_chi2: float
    wall_seconds: float
    galaxies_per_second: float
    device: str
    n_parameters: int
    n_train: int
    n_val: int
    stopped_early: bool
    resumed_from_epoch: int | None
    processes: int = 1

    def metrics(self) -> dict:
        """Everything but the model, JSON-safe (for ``metrics.json`` and asset metadata)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        return json_safe(values)


def resolve_device(device: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return resolved


def _epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's randomness, so a resumed run repeats the same epochs."""
    return (seed * 1_000_003 + epoch * 7_919) % 2**62


def mean_training_maps(training_set: TrainingSet, chunk: int = 256) -> np.ndarray:
    """Per line and pixel, the mean of the valid normalised values of the training split.

    Returns
    -------
    numpy.ndarray, float32 (L, H, W)
        0 where no training galaxy has a valid value.
    """
    shape = training_set.flux.shape[1:]
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.float64)
    train_rows = training_set.rows("train")
    for start in range(0, len(train_rows), chunk):
        rows = train_rows[start : start + chunk]
        valid = np.asarray(training_set.valid[rows])
        total += np.where(valid, training_set.flux[rows], 0.0).sum(axis=0)
        count += valid.sum(axis=0)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)


def baseline_chi_square(training_set: TrainingSet, chunk: int = 256) -> float:
    """Validation chi-square per valid pixel of predicting each line's mean training map.

    The predictor is `mean_training_maps` (the model's starting point: its decoder adds these
    maps), taken back to linear units; the chi-square is the model's (`chi_square_terms`, with
    the default systematic floor), over the validation split (the training split when the
    validation split is empty), chunk by chunk from the memory maps.
    """
    normalisation = training_set.normalisation
    mean_map = to_linear(torch.from_numpy(mean_training_maps(training_set, chunk)), normalisation)
    val_rows = training_set.rows("val")
    if len(val_rows) == 0:
        val_rows = training_set.rows("train")
    chi2, n_valid = 0.0, 0
    for start in range(0, len(val_rows), chunk):
        rows = val_rows[start : start + chunk]
        x = to_linear(torch.from_numpy(np.asarray(training_set.flux[rows])), normalisation)
        valid = torch.from_numpy(np.asarray(training_set.valid[rows]))
        weight = torch.from_numpy(np.asarray(training_set.weight[rows]))
        terms = chi_square_terms(mean_map.expand_as(x), x, weight, valid)
        chi2 += float(terms.double().sum())
        n_valid += int(valid.sum())
    return chi2 / max(n_valid, 1)


def parameter_groups(model: ConvLSTMAutoencoder, weight_decay: float) -> list[dict]:
    """The weights, with decay; the learned floor, without decay and at a faster rate.

    Adam moves a parameter by about the learning rate per step whatever its gradient, and the
    floor lives in log space: at the weights' rate it would rise by e^0.3 in a few hundred steps,
    far from where the residuals put it (a median of 0.35 over lines on the realistic benchmark,
    more for faint lines). Decay would pull it to 1.
    """
    floor = model.log_learned_floor
    weights = [parameter for parameter in model.parameters() if parameter is not floor]
    return [
        {"params": weights, "weight_decay": weight_decay},
        {"params": [floor], "weight_decay": 0.0, "lr_scale": FLOOR_LEARNING_RATE_SCALE},
    ]


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """The batch size, made smaller for a small training set to keep `MIN_STEPS_PER_EPOCH`."""
    return max(1, min(batch_size, math.ceil(n_train / MIN_STEPS_PER_EPOCH)))


def learning_rate_at(step: int, total_steps: int, train_config: TrainConfig) -> float:
    """Linear warm-up from a tenth of the peak, then a cosine down to a tenth of the peak."""
    peak = train_config.learning_rate
    warmup = max(1, int(train_config.warmup_fraction * total_steps))
    if step < warmup:
        return peak * (0.1 + 0.9 * step / warmup)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


def evaluate(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    split: str,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    ranks: Ranks | None = None,
) -> dict[str, float]:
    """Losses of the model over a whole split, in evaluation mode.

    With ``ranks`` of several processes, each evaluates its shard of the split and the sums are
    reduced across the ranks before dividing, so every rank returns the whole split's losses.

    Returns
    -------
    dict
        ``fev``: the typical galaxy's FEV against the mean map (`typical_fit.typical_fev`),
        what early stopping maximises; ``n_fev``: the galaxies with an FEV; ``chi2``:
        chi-square per valid pixel pooled over the split;
        ``kl``: mean per galaxy (nats); ``total``: chi2 plus 2 beta KL per valid pixel, pooled.

    Raises
    ------
    TrainingError
        If the reconstruction of some galaxies is not finite (they are named).
    """
    ranks = ranks or Ranks()
    fit = _split_fit(model, training_set, split, batch_size, torch.device(device), bf16, ranks)
    n_galaxies = len(fit["chi2"])
    # One collective for the whole split: each rank filled its own galaxies, zeros elsewhere.
    packed = np.concatenate([fit["chi2"], fit["chi2_mean_map"], fit["counts"], fit["kl"]])
    chi2, chi2_mean_map, counts, kl = np.split(np.asarray(ranks.sum(*packed)), 4)
    n_valid = max(float(counts.sum()), 1.0)
    per_galaxy = galaxy_fev(chi2, chi2_mean_map, counts)
    fev = typical_fev(per_galaxy)
    if math.isnan(fev):  # no galaxy with line emission to explain: the pooled FEV
        fev = (chi2_mean_map.sum() - chi2.sum()) / max(chi2_mean_map.sum() - n_valid, 1e-12)
    return {
        "fev": float(fev),
        "n_fev": int(np.isfinite(per_galaxy).sum()),
        "chi2": float(chi2.sum() / n_valid),
        "kl": float(kl.sum() / max(n_galaxies, 1)),
        "total": float((chi2.sum() + 2.0 * model.config.kl_weight * kl.sum()) / n_valid),
    }


@torch.no_grad()
def _split_fit(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    split: str,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    ranks: Ranks,
) -> dict[str, np.ndarray]:
    """Per galaxy of a split (0 for other ranks' galaxies): chi-square sums of the model and of
    the mean map, valid pixels, and KL."""
    was_training = model.training
    model.eval()
    dataset = GalaxyMapsDataset(training_set, split)
    fit = {name: np.zeros(len(dataset)) for name in ("chi2", "chi2_mean_map", "counts", "kl")}
    shard = shard_of(len(dataset), ranks)
    try:
        for start in range(0, len(shard), batch_size):
            positions = shard[start : start + batch_size]
            batch = dataset.__getitems__(positions.tolist())
            x = batch.x.to(device, non_blocking=True)
            valid = batch.valid.to(device, non_blocking=True)
            weight = batch.weight.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                # What forward does in evaluation mode: decode the posterior mean.
                latent, log_variance = model.encode_distribution(x, valid)
                reconstruction = model.decode(latent)
            chi2 = model.chi_square_terms(reconstruction, x, weight, valid).double().sum((1, 2, 3))
            if not torch.isfinite(chi2).all():
                bad = batch.rows[~torch.isfinite(chi2).cpu().numpy()]
                raise TrainingError(
                    f"non-finite reconstruction for galaxies {training_set.plateifus(bad)} "
                    f"({split} split of {training_set.path})"
                )
            mean_map = model.mean_maps.expand_as(x)
            base = model.chi_square_terms(mean_map, x, weight, valid).double().sum((1, 2, 3))
            fit["chi2"][positions] = chi2.cpu().numpy()
            fit["chi2_mean_map"][positions] = base.cpu().numpy()
            fit["counts"][positions] = valid.sum((1, 2, 3)).cpu().numpy()
            if log_variance is not None:
                kl = gaussian_kl(latent.float(), log_variance.float())
                fit["kl"][positions] = kl.double().cpu().numpy()
    finally:
        model.train(was_training)
    return fit


def _augment(
    x: torch.Tensor,
    valid: torch.Tensor,
    weight: torch.Tensor,
    step: Step,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random sky symmetry and hidden pixels, drawn as one process draws them for the batch.

    The draws are made for the whole global batch (``step.batch``), in the order of its sorted
    rows, and this rank keeps those of its own galaxies; every rank draws the same, so N
    processes augment each galaxy exactly as one process would.

    Returns
    -------
    x, valid, weight : Tensor
        Transformed by the symmetry.
    input_valid : Tensor of bool
        ``valid`` less the pixels hidden from the encoder.
    """
    x, valid, element = random_dihedral(x, valid, generator)
    weight = dihedral(weight, element)
    # Split rows are ascending, so sorting indices sorts rows: positions in the sorted batch.
    positions = np.searchsorted(np.sort(step.batch), np.sort(step.mine))
    shape = (len(step.batch), *valid.shape[1:])
    visible = hide_pixels(torch.ones(shape, dtype=torch.bool), generator)
    mine = visible[torch.from_numpy(positions)].to(valid.device, non_blocking=True)
    return x, valid, weight, valid & mine


def _check_compatible(model_config: ModelConfig, training_set: TrainingSet) -> None:
    problems = []
    if training_set.line_names != model_config.line_names:
        problems.append(
            f"lines {list(training_set.line_names)} vs the model's {list(model_config.line_names)}"
        )
    if training_set.grid != model_config.grid:
        problems.append(f"grid {training_set.grid} vs the model's {model_config.grid}")
    if training_set.normalisation != model_config.normalisation:
        problems.append(
            f"normalisation {training_set.normalisation} vs the model's "
            f"{model_config.normalisation}"
        )
    if problems:
        raise TrainingSetError(
            f"training set at {training_set.path} does not fit the model configuration: "
            f"{'; '.join(problems)}; rebuild the training set with the model's settings"
        )


def _save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a checkpoint."""
    with atomic_path(path, durable=True) as temporary:
        torch.save(state, temporary)


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in unwrap(model).state_dict().items()}


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    training_set_dir: Path | str,
    checkpoint_dir: Path | str,
    log: Callable[[str], None] | None = None,
    *,
    fresh: bool = False,
    distributed: DistributedConfig | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a ConvLSTM autoencoder, resuming from ``checkpoint_dir`` when possible.

    Parameters
    ----------
    model_config : ModelConfig
        Must match the training set's lines, grid and normalisation.
    train_config : TrainConfig
    training_set_dir : Path
        Written by `manga_assets.model.dataset.build_training_set`.
    checkpoint_dir : Path
        Where ``training_state.pt`` is kept (created if needed). A checkpoint there from the same
        model config, the same `TrainConfig.resume_key` and the same training set is resumed; any
        other is replaced.
    log : callable, optional
        Receives one line per epoch and notes (resume, early stop).
    fresh : bool
        Start from epoch 1 whatever the checkpoint holds (a forced retraining).
    distributed : DistributedConfig, optional
        With ``processes`` > 1, train in that many new processes with DDP (gloo on the CPU,
        nccl with one GPU per process): the same epochs over the same global batches of
        ``batch_size`` galaxies, split between the processes. ``num_threads`` is then per
        process (default: this process's CPUs shared out). Only the first process writes the
        checkpoint; a checkpoint resumes with any number of processes.
    on_epoch_end : callable, optional
        Called in this process with the epoch's number once each epoch is trained, checkpointed
        and logged (distributed: once per epoch, for the first process).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        If a batch holds non-finite inputs, or the loss becomes non-finite (the galaxies of the
        batch are named).
    TrainingSetError
        If the training set does not fit the model configuration.
    CheckpointError
        If the checkpoint in ``checkpoint_dir`` is corrupted (delete it to start afresh).
    """
    log = log or (lambda message: None)
    on_epoch_end = on_epoch_end or (lambda epoch: None)
    started = time.perf_counter()
    training_set = open_training_set(training_set_dir)
    _check_compatible(model_config, training_set)
    device = resolve_device(train_config.device)
    if distributed is not None and distributed.processes > 1:
        result = spawn(
            _train_rank,
            (model_config, train_config, str(training_set_dir), str(checkpoint_dir), fresh),
            distributed,
            device.type,
            log,
            on_epoch_end=on_epoch_end,
            raisable=(TrainingError, TrainingSetError, CheckpointError),
        )
        log(f"training call took {time.perf_counter() - started:.1f} s "
            f"({distributed.processes} processes)")  # fmt: skip
        return result
    previous_threads = torch.get_num_threads()
    if train_config.num_threads is not None:
        torch.set_num_threads(train_config.num_threads)
    try:
        return _train(
            model_config,
            train_config,
            training_set,
            Path(checkpoint_dir),
            device,
            log,
            fresh,
            on_epoch_end=on_epoch_end,
        )
    finally:
        torch.set_num_threads(previous_threads)
        log(f"training call took {time.perf_counter() - started:.1f} s")


def _train_rank(
    ranks: Ranks,
    model_config: ModelConfig,
    train_config: TrainConfig,
    training_set_dir: str,
    checkpoint_dir: str,
    fresh: bool,
    *,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int], None],
) -> TrainResult:
    """One process of a distributed training (run by `manga_assets.model.distributed.spawn`)."""
    device = torch.device(rank_device(resolve_device(train_config.device).type, ranks))
    threads = train_config.num_threads or default_threads(ranks.world_size)
    torch.set_num_threads(threads)
    training_set = open_training_set(training_set_dir)
    return _train(
        model_config,
        train_config,
        training_set,
        Path(checkpoint_dir),
        device,
        log,
        fresh,
        ranks,
        on_epoch_end=on_epoch_end,
    )


def _train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    training_set: TrainingSet,
    checkpoint_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
    fresh: bool,
    ranks: Ranks | None = None,
    on_epoch_end: Callable[[int], None] = lambda epoch: None,
) -> TrainResult:
    """The training loop of one process: set up, resume, train epochs, keep the best weights."""
    started = time.perf_counter()
    ranks = ranks or Ranks()
    model, optimizer = _new_model(model_config, train_config, training_set, device)
    val_split = _validation_split(training_set, log)
    # Only the process that logs and returns the result needs the baseline.
    baseline = baseline_chi_square(training_set) if ranks.is_writer else math.nan

    if ranks.is_writer:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = checkpoint_dir / CHECKPOINT_FILE
    identity = _checkpoint_identity(model_config, train_config, training_set)
    progress = _resume(checkpoint_path, identity, model, optimizer, fresh, log)

    _refuse_nonfinite_inputs(training_set)
    training_model = _training_forward(model, train_config, ranks)
    dataset = _training_data(training_set, train_config, device, log)
    _log_start(model, training_set, val_split, device, ranks, baseline, log)
    batch_size = _batch_size(train_config, len(dataset), log)
    run = _EpochRun(
        model=model,
        losses=_training_losses(training_model, train_config, device, ranks, batch_size, log),
        optimizer=optimizer,
        training_set=training_set,
        dataset=dataset,
        train_config=train_config,
        device=device,
        ranks=ranks,
        batch_size=batch_size,
    )
    if run.epochs < train_config.epochs:
        log(f"{run.epochs} epochs, not {train_config.epochs}: {run.steps_per_epoch} steps each "
            f"reach the budget of max_steps={train_config.max_steps}")  # fmt: skip
    for epoch in range(progress.start_epoch, run.epochs + 1):
        if progress.stopped_early:
            break
        epoch_started = time.perf_counter()
        sums = _train_epoch(run, epoch)
        train_seconds = time.perf_counter() - epoch_started
        sums = sums.summed_over(ranks)
        val = evaluate(
            model,
            training_set,
            val_split,
            batch_size=max(train_config.batch_size, 64),
            device=device,
            bf16=train_config.bf16,
            ranks=ranks,
        )
        progress.history.append(_history_entry(epoch, sums, val, epoch_started, train_seconds))
        progress.judge(epoch, val, model, train_config)
        if ranks.is_writer:
            _save_checkpoint(
                checkpoint_path, progress.checkpoint(identity, epoch, model, optimizer)
            )
        log(_epoch_line(epoch, run.epochs, sums, val, baseline, train_seconds))
        if ranks.is_writer:
            on_epoch_end(epoch)
        if progress.stopped_early:
            log(
                f"early stop after epoch {epoch}: no better typical validation galaxy for "
                f"{train_config.patience} epochs (best epoch {progress.best_epoch})"
            )

    if not progress.history:
        raise TrainingError(f"no epoch was trained (epochs={train_config.epochs})")
    set_compiled_steps(model, False)
    load_weights(model, progress.best_state, checkpoint_path, "retrain")
    return _result(model.cpu().eval(), progress, training_set, baseline, started, device, ranks)


def _new_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    training_set: TrainingSet,
    device: torch.device,
) -> tuple[ConvLSTMAutoencoder, torch.optim.Optimizer]:
    """The seeded initial model, starting from the training set's mean maps, and its optimiser."""
    torch.manual_seed(train_config.seed)
    model = ConvLSTMAutoencoder(model_config)
    model.set_mean_maps(torch.from_numpy(mean_training_maps(training_set)))
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, train_config.weight_decay), lr=train_config.learning_rate
    )
    return model, optimizer


def _refuse_nonfinite_inputs(training_set: TrainingSet) -> None:
    bad = nonfinite_galaxies(training_set, "train")
    if bad:
        raise TrainingError(
            f"non-finite input values in galaxies {bad} of the training set at "
            f"{training_set.path}; rebuild the training set"
        )


def _training_data(
    training_set: TrainingSet,
    train_config: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
) -> GalaxyMapsDataset | ResidentSplit:
    """The training split, read from the memory maps per batch or held on the device."""
    resident = train_config.resident_data
    if resident is None:
        resident = resident_by_default(training_set, "train", device)
    if not resident:
        return GalaxyMapsDataset(training_set, "train")
    started = time.perf_counter()
    data = ResidentSplit(training_set, "train", device)
    log(f"training split copied to {device} in {time.perf_counter() - started:.1f} s")
    return data


def _training_losses(
    training_model: torch.nn.Module,
    train_config: TrainConfig,
    device: torch.device,
    ranks: Ranks,
    batch_size: int,
    log: Callable[[str], None],
) -> Callable[..., dict[str, torch.Tensor]]:
    """The function from a batch to its losses: the model eagerly, or replayed CUDA graphs."""
    if train_config.cuda_graphs and device.type == "cuda" and ranks.world_size == 1:
        return GraphedLosses(training_model, batch_size, train_config.bf16, log)
    if train_config.cuda_graphs:
        log("cuda_graphs needs one process on a GPU: training eagerly")

    def eager_losses(*inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=train_config.bf16):
            return training_model(*inputs)[1]

    return eager_losses


def _validation_split(training_set: TrainingSet, log: Callable[[str], None]) -> str:
    """The split to validate on: "val", or "train" when "val" is empty (very few plates)."""
    val_split = "val" if len(training_set.rows("val")) else "train"
    if val_split == "train":
        log("the validation split is empty: validating on the training split")
    return val_split


def _checkpoint_identity(
    model_config: ModelConfig, train_config: TrainConfig, training_set: TrainingSet
) -> dict:
    """What a checkpoint must match to be resumed (it is stored in the checkpoint)."""
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "train_key": train_config.resume_key(),
        "training_set": training_set.fingerprint,
    }


@dataclass
class _Progress:
    """What the epochs so far decided; a checkpoint holds it, and a resumed run restores it."""

    history: list[dict]
    best_state: dict[str, torch.Tensor]
    best_epoch: int = 0
    best_val_fev: float = -math.inf
    best_val_total: float = math.inf
    best_val_chi2: float = math.inf
    epochs_since_best: int = 0
    stopped_early: bool = False
    resumed_from: int | None = None

    @property
    def start_epoch(self) -> int:
        return 1 if self.resumed_from is None else self.resumed_from + 1

    def judge(
        self, epoch: int, val: dict[str, float], model: torch.nn.Module, config: TrainConfig
    ) -> None:
        """Keep ``model`` if this epoch's typical validation galaxy is the best fitted yet."""
        # NaN (no validation galaxy with line emission to explain) never beats the first epoch.
        # A split too small to tell epochs apart keeps the last: the schedule's end.
        too_few = val["n_fev"] < MIN_TYPICAL_GALAXIES
        if too_few or self.best_epoch == 0 or val["fev"] > self.best_val_fev + config.min_delta:
            self.best_epoch, self.best_val_fev = epoch, val["fev"]
            self.best_val_total, self.best_val_chi2 = val["total"], val["chi2"]
            self.best_state = _state_copy(model)
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        self.stopped_early = self.epochs_since_best >= config.patience

    def checkpoint(
        self,
        identity: dict,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> dict:
        """The state after ``epoch``: enough to go on as if the run had not stopped."""
        return {
            **identity,
            "epoch": epoch,
            "model": _state_copy(model),
            "optimizer": optimizer.state_dict(),
            "best_model": self.best_state,
            "best_epoch": self.best_epoch,
            "best_val_fev": self.best_val_fev,
            "best_val_total": self.best_val_total,
            "best_val_chi2": self.best_val_chi2,
            "epochs_since_best": self.epochs_since_best,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }

    @classmethod
    def restored(cls, saved: dict) -> _Progress:
        return cls(
            history=list(saved["history"]),
            best_state=saved["best_model"],
            best_epoch=int(saved["best_epoch"]),
            best_val_fev=float(saved["best_val_fev"]),
            best_val_total=float(saved["best_val_total"]),
            best_val_chi2=float(saved["best_val_chi2"]),
            epochs_since_best=int(saved["epochs_since_best"]),
            stopped_early=bool(saved["stopped_early"]),
            resumed_from=int(saved["epoch"]),
        )


def _resume(
    checkpoint_path: Path,
    identity: dict,
    model: ConvLSTMAutoencoder,
    optimizer: torch.optim.Optimizer,
    fresh: bool,
    log: Callable[[str], None],
) -> _Progress:
    """The checkpoint's progress, its weights and optimiser loaded, when it matches
    ``identity`` and ``fresh`` is false; else a start from epoch 1."""
    start = _Progress(history=[], best_state=_state_copy(model))
    if fresh and checkpoint_path.exists():
        log(f"forced retraining: ignoring the checkpoint in {checkpoint_path}")
        return start
    if not checkpoint_path.exists():
        return start
    remedy = f"delete {checkpoint_path} to train from scratch"
    saved = load_state_file(checkpoint_path, remedy)
    if not (
        isinstance(saved, dict) and all(saved.get(key) == value for key, value in identity.items())
    ):
        log(f"{checkpoint_path} is from other settings or data: training from scratch")
        return start
    load_weights(model, saved["model"], checkpoint_path, remedy)
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"{checkpoint_path} holds an unusable optimizer state ({error}); {remedy}"
        ) from error
    progress = _Progress.restored(saved)
    log(f"resuming from the checkpoint of epoch {progress.resumed_from} in {checkpoint_path}")
    return progress


def _training_forward(
    model: ConvLSTMAutoencoder, train_config: TrainConfig, ranks: Ranks
) -> torch.nn.Module:
    """What the training forward goes through: DDP (which averages the gradients), with the
    ConvLSTM gate arithmetic compiled when asked. The optimiser and evaluation hold the bare
    model."""
    # Not torch.compile of the whole model: Dynamo unrolls the 4 x 19 recurrent steps into one
    # graph, whose forward had not compiled after 125 s on an H200 nor after 9 minutes on the CPU.
    set_compiled_steps(model, train_config.compile)
    return ranks.wrap(model)


def _log_start(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    val_split: str,
    device: torch.device,
    ranks: Ranks,
    baseline: float,
    log: Callable[[str], None],
) -> None:
    on = f"{ranks.world_size} processes ({device.type})" if ranks.world_size > 1 else device
    log(
        f"training {model.config.variant} ({model.get_num_params():,} parameters) on {on}: "
        f"{len(training_set.rows('train'))} train / {len(training_set.rows(val_split))} "
        f"{val_split} galaxies, mean-map val chi2 {baseline:.4g} per pixel"
    )


def _batch_size(train_config: TrainConfig, n_train: int, log: Callable[[str], None]) -> int:
    batch_size = effective_batch_size(train_config.batch_size, n_train)
    if batch_size < train_config.batch_size:
        log(f"batches of {batch_size} galaxies, not {train_config.batch_size}: "
            f"{n_train} training galaxies would give too few steps per epoch")  # fmt: skip
    return batch_size


@dataclass
class _EpochRun:
    """What every epoch of one training call works with."""

    model: ConvLSTMAutoencoder
    losses: Callable[..., dict[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    training_set: TrainingSet
    dataset: GalaxyMapsDataset | ResidentSplit
    train_config: TrainConfig
    device: torch.device
    ranks: Ranks
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    @property
    def epochs(self) -> int:
        return self.train_config.planned_epochs(self.steps_per_epoch)

    def set_learning_rate(self, epoch: int, step_in_epoch: int) -> float:
        """Set the schedule's learning rate for a step (the floor's group at its own scale)."""
        total_steps = self.steps_per_epoch * self.epochs
        learning_rate = learning_rate_at(
            (epoch - 1) * self.steps_per_epoch + step_in_epoch, total_steps, self.train_config
        )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * group.get("lr_scale", 1.0)
        return learning_rate


@dataclass
class _EpochSums:
    """One epoch's training losses, as sums (reduced over the ranks before dividing)."""

    learning_rate: float = math.nan  # at the epoch's last step
    chi2_sum: float = 0.0
    n_valid: int = 0
    kl_sum: float = 0.0
    n_galaxies: int = 0

    def summed_over(self, ranks: Ranks) -> _EpochSums:
        chi2_sum, n_valid, kl_sum, n_galaxies = ranks.sum(
            self.chi2_sum, self.n_valid, self.kl_sum, self.n_galaxies
        )
        return _EpochSums(self.learning_rate, chi2_sum, n_valid, kl_sum, n_galaxies)

    @property
    def train_chi2(self) -> float:
        return self.chi2_sum / max(self.n_valid, 1)

    @property
    def train_kl(self) -> float:
        return self.kl_sum / max(self.n_galaxies, 1)


class _DeviceSums:
    """The epoch's sums kept on the training device while it trains, so that no step waits for
    the device to report a number; and the first step whose loss was not finite."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.chi2, self.n_valid, self.kl = zero.clone(), zero.clone(), zero.clone()
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=device)
        self.nonfinite_loss = zero.clone()
        self.n_galaxies = 0

    def add(self, step_index: int, losses: dict[str, torch.Tensor], batch_valid: torch.Tensor,
            n_galaxies: int) -> None:  # fmt: skip
        self.chi2 += losses["chi2"].detach().double() * batch_valid
        self.n_valid += batch_valid
        self.kl += losses["kl"].detach().double() * n_galaxies
        self.n_galaxies += n_galaxies
        total = losses["total"].detach().double()
        nonfinite = ~torch.isfinite(total) & (self.first_nonfinite < 0)
        self.first_nonfinite = torch.where(nonfinite, step_index, self.first_nonfinite)
        self.nonfinite_loss = torch.where(nonfinite, total, self.nonfinite_loss)

    def to_host(self, learning_rate: float) -> _EpochSums:
        return _EpochSums(
            learning_rate, float(self.chi2), int(self.n_valid), float(self.kl), self.n_galaxies
        )


def _train_epoch(run: _EpochRun, epoch: int) -> _EpochSums:
    """One pass over this rank's share of the training split, from the (seed, epoch) streams."""
    epoch_seed = _epoch_seed(run.train_config.seed, epoch)
    torch.manual_seed(run.ranks.seed(epoch_seed))  # the VAE's reparameterisation noise
    # The same on every rank: augmentation is drawn for the global batch (_augment).
    augment_generator = torch.Generator().manual_seed(epoch_seed + 1)
    run.model.train()
    sums = _DeviceSums(run.device)
    learning_rate = math.nan
    steps = epoch_steps(len(run.dataset), run.batch_size, epoch_seed, run.ranks)
    batch_rows = []
    for step_in_epoch, step in enumerate(steps):
        batch = run.dataset.__getitems__(step.mine.tolist())
        batch_rows.append(batch.rows)
        learning_rate = run.set_learning_rate(epoch, step_in_epoch)
        losses, batch_valid = _train_step(run, batch, step, augment_generator)
        sums.add(step_in_epoch, losses, batch_valid, len(batch.rows))
        if (step_in_epoch + 1) % STEPS_PER_LOSS_CHECK == 0 or step_in_epoch + 1 == len(steps):
            _check_loss(run, epoch, sums, batch_rows)
    return sums.to_host(learning_rate)


def _check_loss(
    run: _EpochRun, epoch: int, sums: _DeviceSums, batch_rows: list[np.ndarray]
) -> None:
    """Raise if a step's loss was not finite, naming the galaxies of the first such batch."""
    first = int(sums.first_nonfinite)
    if first >= 0:
        raise TrainingError(
            f"the loss became {float(sums.nonfinite_loss)} at epoch {epoch} in a batch of galaxies "
            f"{run.training_set.plateifus(batch_rows[first])}; check these cubes, or lower the "
            f"learning rate (now {run.train_config.learning_rate})"
        )


def _train_step(
    run: _EpochRun,
    batch: Batch,
    step: Step,
    augment_generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimiser step on a batch; returns its losses and its valid pixels (on the device:
    nothing here waits for the device)."""
    config, device = run.train_config, run.device
    x, valid, weight = (
        tensor.to(device, non_blocking=True) for tensor in (batch.x, batch.valid, batch.weight)
    )
    input_valid = valid
    if config.augment:
        x, valid, weight, input_valid = _augment(x, valid, weight, step, augment_generator)
    batch_valid = valid.sum()
    losses = run.losses(x, valid, weight, input_valid)
    run.optimizer.zero_grad(set_to_none=True)
    share = run.ranks.loss_weight(len(batch.rows))  # the loss is a mean over galaxies
    total = losses["total"]
    (total * share if run.ranks.world_size > 1 else total).backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    return losses, batch_valid


def _history_entry(
    epoch: int,
    sums: _EpochSums,
    val: dict[str, float],
    epoch_started: float,
    train_seconds: float,
) -> dict:
    return {
        "epoch": epoch,
        "learning_rate": sums.learning_rate,
        "train_chi2": sums.train_chi2,
        "train_kl": sums.train_kl,
        "val_fev": val["fev"],
        "val_chi2": val["chi2"],
        "val_kl": val["kl"],
        "val_total": val["total"],
        "seconds": time.perf_counter() - epoch_started,
        "train_seconds": train_seconds,
        "galaxies_per_second": sums.n_galaxies / train_seconds,
    }


def _epoch_line(
    epoch: int,
    epochs: int,
    sums: _EpochSums,
    val: dict[str, float],
    baseline: float,
    train_seconds: float,
) -> str:
    return (
        f"epoch {epoch}/{epochs}: lr {sums.learning_rate:.2e} | train chi2 "
        f"{sums.train_chi2:.4g} kl {sums.train_kl:.3g} | val: typical galaxy's FEV "
        f"{val['fev']:.3f}, chi2 {val['chi2']:.4g} per pixel (mean map {baseline:.4g}) | "
        f"{sums.n_galaxies / train_seconds:.1f} galaxies/s"
    )


def _result(
    model: ConvLSTMAutoencoder,
    progress: _Progress,
    training_set: TrainingSet,
    baseline: float,
    started: float,
    device: torch.device,
    ranks: Ranks,
) -> TrainResult:
    history = progress.history
    seen = sum(entry["galaxies_per_second"] * entry["train_seconds"] for entry in history)
    train_time = sum(entry["train_seconds"] for entry in history)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=progress.best_epoch,
        best_val_fev=progress.best_val_fev,
        best_val_chi2=progress.best_val_chi2,
        best_val_total=progress.best_val_total,
        baseline_val_chi2=baseline,
        wall_seconds=time.perf_counter() - started,
        galaxies_per_second=seen / train_time if train_time > 0 else 0.0,
        device=str(device),
        n_parameters=model.get_num_params(),
        n_train=len(training_set.rows("train")),
        n_val=len(training_set.rows("val")),
        stopped_early=progress.stopped_early,
        resumed_from_epoch=progress.resumed_from,
        processes=ranks.world_size,
    )
