"""Data-parallel training over several processes (torch DistributedDataParallel).

`manga_assets.model.train.train_model` stays the one entry: given a `DistributedConfig` with more
than one process, it calls `spawn`, which starts the ranks with ``torch.multiprocessing`` and
each rank runs the same training loop with a `Ranks` object that says which share of the work is
its own. The ranks are forked from a "forkserver" that has imported torch and the training code
once (spawn where there is no forkserver): no rank inherits this process's threads or CUDA state,
and the second training in a process starts its ranks in a fraction of a second instead of
importing torch again in each.

What makes N ranks train the model one process would:

- Every epoch draws one permutation of the training galaxies from the (seed, epoch) generator,
  exactly the order one process uses, and cuts it into the same global batches; each rank takes
  every N-th galaxy of each global batch (`epoch_steps`). The shards are deterministic, and the
  union of the shards of a step is the single-process batch.
- The loss of a rank is weighted by its share of the step's galaxies (`Ranks.loss_weight`),
  so DDP's average of the ranks' gradients is the gradient of the chi-square over the whole
  global batch, not a mean of per-rank means.
- Sums (chi-square, valid pixels, KL, galaxies) are reduced across ranks, then divided; a mean
  of means would weigh a rank with few valid pixels like one with many.
- Rank 0 alone writes checkpoints and returns the model; the others only read a checkpoint to
  resume. The checkpoint holds the global state (weights and optimiser, the same on every rank
  after each step), so any number of processes can resume it.

- Augmentation is drawn for the whole global batch from the same (seed, epoch) generator on every
  rank, and each rank keeps its galaxies' draws; so the plain autoencoder trained by N processes
  is the one a single process trains, to rounding. The VAE's sampling noise is drawn inside the
  model, per rank (seeded by seed, epoch and rank): its N-process runs repeat each other, and
  differ from one process's only by that noise.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue as queue_module
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("auto", "gloo", "nccl")
# Added to an epoch's seed per rank: large and odd, so ranks never share an epoch's stream.
RANK_SEED_STRIDE = 1_000_000_007
# How long the ranks wait for each other at start and in a collective before giving up.
RANK_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class DistributedConfig:
    """How many training processes, and how they talk.

    Parameters
    ----------
    processes : int
        Ranks to start on this machine (default 1: no extra process at all).
    backend : str
        "gloo" (CPU), "nccl" (CUDA, one GPU per rank) or "auto": nccl when training on CUDA,
        else gloo.
    """

    processes: int = 1
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be positive, got {self.processes}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def resolved_backend(self, device_type: str) -> str:
        """The backend for ranks training on ``device_type`` ("cpu" or "cuda")."""
        backend = self.backend
        if backend == "auto":
            backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl" and device_type != "cuda":
            raise ValueError("the nccl backend needs device 'cuda'; use gloo to train on the CPU")
        return backend


@dataclass(frozen=True)
class Ranks:
    """What one training process knows of its peers (``Ranks()`` is a lone process).

    Attributes
    ----------
    rank : int
        0-based; rank 0 writes checkpoints and returns the model.
    world_size : int
    device : str
        Where collectives put their tensors: the rank's GPU for nccl, else "cpu".
    """

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """``seed`` for rank 0, a distinct stream for each other rank."""
        return (seed + self.rank * RANK_SEED_STRIDE) % 2**62

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (float64), in one collective."""
        if self.world_size == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tuple(float(value) for value in tensor.cpu())

    def loss_weight(self, n_units: int) -> float:
        """Factor on this rank's mean loss so DDP's averaged gradient is the global one.

        The loss is a mean over units (galaxies). DDP divides the sum of the ranks' gradients by
        N; a rank holding n of the step's M units contributes its mean loss times n N / M, so the
        result is the gradient of the loss summed over all M units divided by M, as one process
        on the whole batch computes.
        """
        if self.world_size == 1:
            return 1.0
        (total,) = self.sum(float(n_units))
        return n_units * self.world_size / max(total, 1.0)

    def wrap(self, model: Any) -> Any:
        """``model`` in DistributedDataParallel (unchanged for a lone process)."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=device_ids)


@dataclass(frozen=True)
class Step:
    """One optimisation step of one rank.

    Attributes
    ----------
    batch : numpy.ndarray of int64
        The global batch: the galaxies (indices into the split) one process would take.
    mine : numpy.ndarray of int64
        This rank's share of it.
    """

    batch: np.ndarray
    mine: np.ndarray


def epoch_steps(n: int, batch_size: int, seed: int, ranks: Ranks | None = None) -> list[Step]:
    """The steps of one epoch over a split of ``n`` galaxies, with this rank's share of each.

    The permutation is the one a shuffling ``DataLoader`` draws from a generator seeded with
    ``seed``, cut into global batches of ``batch_size``; rank r takes positions r, r + N, ... of
    each. A global batch smaller than the number of ranks (a short last batch) is padded by
    repeating its galaxies, as ``DistributedSampler`` pads, so every rank takes part in every
    step (every rank gets the same number of steps).
    """
    import torch

    ranks = ranks or Ranks()
    generator = torch.Generator().manual_seed(seed)
    # A DataLoader draws its workers' base seed from the generator before the permutation; so
    # does this, so one process keeps the batches it had with `make_loader`.
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator).numpy().astype(np.int64)
    steps = []
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        padded = np.resize(batch, ranks.world_size) if len(batch) < ranks.world_size else batch
        steps.append(Step(batch=batch, mine=padded[ranks.rank :: ranks.world_size]))
    return steps


def shard_of(n: int, ranks: Ranks) -> np.ndarray:
    """Indices 0..n-1 that this rank evaluates (every N-th; the shards partition them)."""
    return np.arange(ranks.rank, n, ranks.world_size, dtype=np.int64)


def rank_device(device_type: str, ranks: Ranks) -> str:
    """The device of one rank: its own GPU ``cuda:<rank>`` (one machine), else the CPU."""
    return f"cuda:{ranks.rank}" if device_type == "cuda" else "cpu"


def default_threads(processes: int) -> int:
    """Torch threads per rank when none are configured: this process's CPUs shared out."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // processes)


def _exit_with_parent(alive: Any) -> None:
    """End this rank as soon as the launching process is gone (even killed by SIGKILL).

    ``alive`` is the read end of a pipe whose only write end the launcher holds: the kernel
    closes it when the launcher dies, the read returns, and the rank exits. A run may be killed
    at any instant; ranks left behind would keep training and rank 0 would keep writing
    checkpoints under a run that no longer exists.
    """

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@dataclass(frozen=True)
class _Launch:
    world_size: int
    backend: str
    device_type: str
    store: str
    target: Callable[..., Any]
    args: tuple
    raisable: tuple[type[BaseException], ...]


def _rank_main(rank: int, launch: _Launch, messages: Any, alive: Any) -> None:
    """Body of one rank: join the group, run the target, report to the parent."""
    _exit_with_parent(alive)
    import datetime

    import torch
    import torch.distributed as dist

    ranks = Ranks(rank, launch.world_size, rank_device(launch.device_type, Ranks(rank)))
    if launch.device_type == "cuda":
        torch.cuda.set_device(ranks.device)
    if launch.backend == "gloo" and sys.platform.startswith("linux"):
        # Keep the ranks' connections on the loopback interface: they are all on this machine,
        # and nothing should listen on the network for them.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        launch.backend,
        init_method=f"file://{launch.store}",
        rank=rank,
        world_size=launch.world_size,
        timeout=datetime.timedelta(seconds=RANK_TIMEOUT_SECONDS),
    )

    def log(message: str) -> None:
        if ranks.is_writer:
            messages.put(("log", message))

    def on_epoch_end(epoch: int) -> None:
        if ranks.is_writer:
            messages.put(("epoch_end", epoch))

    try:
        result = launch.target(ranks, *launch.args, log=log, on_epoch_end=on_epoch_end)
        if ranks.is_writer:
            # Pickled here, by value: torch's queue would otherwise share the tensors' memory
            # with the parent, which needs this process alive after it has exited.
            messages.put(("result", pickle.dumps(result)))
    except BaseException as error:
        kind = next((i for i, k in enumerate(launch.raisable) if isinstance(error, k)), None)
        messages.put(("error", rank, kind, str(error), traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()


def spawn(
    target: Callable[..., Any],
    args: Sequence[Any],
    config: DistributedConfig,
    device_type: str,
    log: Callable[[str], None],
    *,
    on_epoch_end: Callable[[int], None] = lambda epoch: None,
    raisable: tuple[type[BaseException], ...] = (),
) -> Any:
    """Run ``target(ranks, *args, log=..., on_epoch_end=...)`` in ``config.processes`` new
    processes.

    Parameters
    ----------
    target : callable
        A module-level function (the ranks import it by name). Rank 0's ``log`` lines reach
        ``log`` here; the other ranks' are dropped.
    args : sequence
        Picklable arguments, the same for every rank.
    config : DistributedConfig
    device_type : str
        "cpu" or "cuda" (one GPU per rank, ``cuda:<rank>``).
    log : callable
        Called in this process; if it raises, the ranks are stopped and the error propagates.
    on_epoch_end : callable, optional
        Called in this process, in order with the log lines, for each epoch rank 0 reports.
    raisable : tuple of exception types
        A rank's exception of one of these types is raised here with the same type and message
        (and the rank named); any other becomes a RuntimeError carrying the rank's traceback.

    Returns
    -------
    What ``target`` returned on rank 0.
    """
    import torch.multiprocessing as mp

    backend = config.resolved_backend(device_type)
    _check_gpus(config.processes, device_type)
    start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    context = mp.get_context(start_method)
    if start_method == "forkserver":
        # Only takes effect when this call starts the forkserver (the first in this process).
        # DDP's constructor imports torch._dynamo (seconds): once in the server, not per rank.
        context.set_forkserver_preload([target.__module__, "torch._dynamo"])
    inbox = _Inbox(context.Queue(), log, on_epoch_end)
    alive, alive_writer = context.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="manga-ddp-") as store_dir:
        launch = _Launch(
            world_size=config.processes,
            backend=backend,
            device_type=device_type,
            store=str(Path(store_dir) / "store"),
            target=target,
            args=tuple(args),
            raisable=raisable,
        )
        processes = mp.start_processes(
            _rank_main,
            args=(launch, inbox.messages, alive),
            nprocs=config.processes,
            join=False,
            start_method=start_method,
        )
        try:
            _wait_for_ranks(processes, inbox, raisable)
        finally:
            _stop_ranks(processes)
            alive_writer.close()
    if inbox.rank_error is not None:
        raise _rank_failure(inbox.rank_error, raisable, None)
    return inbox.result


def _check_gpus(processes: int, device_type: str) -> None:
    if device_type == "cuda":
        import torch

        if torch.cuda.device_count() < processes:
            raise ValueError(
                f"{processes} processes need as many GPUs, {torch.cuda.device_count()} are visible"
            )


class _Inbox:
    """The launcher's end of the ranks' message queue: it passes rank 0's log lines and epoch
    ends on in order, and keeps rank 0's result and the first rank error."""

    def __init__(
        self,
        messages: Any,
        log: Callable[[str], None],
        on_epoch_end: Callable[[int], None],
    ) -> None:
        self.messages = messages
        self.log = log
        self.on_epoch_end = on_epoch_end
        self.result: Any = None
        self.rank_error: tuple | None = None

    def drain(self, wait: float) -> None:
        """Handle the messages that arrive within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                return
            if message[0] == "log":
                self.log(message[1])
            elif message[0] == "epoch_end":
                self.on_epoch_end(message[1])
            elif message[0] == "result":
                self.result = pickle.loads(message[1])
            elif self.rank_error is None:  # the first error is the cause; later ones follow it
                self.rank_error = message[1:]


def _wait_for_ranks(
    processes: Any, inbox: _Inbox, raisable: tuple[type[BaseException], ...]
) -> None:
    """Relay the ranks' messages until they have all exited; raise if one failed."""
    import torch.multiprocessing as mp

    done = False
    while not done:
        inbox.drain(0.2)
        try:
            done = processes.join(timeout=0)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as failure:
            inbox.drain(1.0)
            raise _rank_failure(inbox.rank_error, raisable, failure) from None
    inbox.drain(0.0)


def _stop_ranks(processes: Any) -> None:
    """Terminate the ranks still running (after a failure, or a ``log`` that raised)."""
    for process in processes.processes:
        if process.is_alive():
            process.terminate()
    for process in processes.processes:
        process.join(timeout=30)


def _rank_failure(
    rank_error: tuple | None,
    raisable: tuple[type[BaseException], ...],
    failure: BaseException | None,
) -> BaseException:
    """The exception to raise in the parent for a failed rank."""
    if rank_error is None:
        return RuntimeError(f"a training process failed: {failure}")
    rank, kind, message, rank_traceback = rank_error
    if kind is not None:
        return raisable[kind](f"{message} (training process {rank})")
    return RuntimeError(f"training process {rank} failed:\n{rank_traceback}")
