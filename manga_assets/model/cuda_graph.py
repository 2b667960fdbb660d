"""The training step's forward and backward replayed as CUDA graphs.

On a GPU the model is launch-bound: a batch of 32 through 19 recurrent steps in each of four
ConvLSTM layers is thousands of small kernels, each launched from Python, and an H200 ran the
default model at 3 % of its matmul rate (benchmarks/RESULTS.md). A CUDA graph records those
kernels once and replays them with one launch. `torch.cuda.make_graphed_callables` records the
forward and the backward of a module for inputs of one shape; the optimiser step stays outside.

Only full batches are replayed (a graph holds one shape); an epoch's shorter last batch runs
eagerly through the same module. The inputs are copied into the graph's own tensors, so they must
be on the GPU already (`manga_assets.model.resident`). Autocast must not cache casts across
replays, hence ``cache_enabled=False``. The VAE's reparameterisation noise is drawn inside the
graph from the CUDA generator, which PyTorch advances at every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Tensor = torch.Tensor
LOSS_NAMES = ("total", "chi2", "kl")


class TrainingLosses(nn.Module):
    """The model's losses as a tuple of tensors (``total``, ``chi2``, ``kl``): what a graph can
    return (`ConvLSTMAutoencoder.forward` returns the reconstruction and a dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: Tensor, valid: Tensor, weight: Tensor, input_valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        _, losses = self.model(x, valid, weight, input_valid)
        return tuple(losses[name] for name in LOSS_NAMES)


class GraphedLosses:
    """Calls `TrainingLosses` through a CUDA graph for full batches, eagerly otherwise.

    Parameters
    ----------
    model : nn.Module
        The autoencoder, on a CUDA device, in training mode.
    batch_size : int
        The shape of a full batch; the graph is recorded at the first such batch.
    bf16 : bool
        bfloat16 autocast (recorded into the graph).
    log : callable
    """

    def __init__(
        self, model: nn.Module, batch_size: int, bf16: bool, log: Callable[[str], None]
    ) -> None:
        self.model = model
        self.eager = TrainingLosses(model)
        self.batch_size = batch_size
        self.bf16 = bf16
        self.log = log
        self.graphed: Callable | None = None

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False)

    def __call__(
        self, x: Tensor, valid: Tensor, weight: Tensor, input_valid: Tensor
    ) -> dict[str, Tensor]:
        inputs = (x, valid, weight, input_valid)
        if len(x) != self.batch_size:
            with self._autocast():
                return dict(zip(LOSS_NAMES, self.eager(*inputs), strict=True))
        if self.graphed is None:
            self.graphed = self._record(inputs)
        with self._autocast():
            return dict(zip(LOSS_NAMES, self.graphed(*inputs), strict=True))

    def _record(self, inputs: tuple[Tensor, ...]) -> Callable:
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        samples = tuple(tensor.clone() for tensor in inputs)
        # make_graphed_callables replaces the forward of the module it is given: a module of
        # its own, so that `eager` stays eager for the shorter batches.
        with self._autocast():
            graphed = torch.cuda.make_graphed_callables(
                TrainingLosses(self.model), samples, allow_unused_input=True
            )
        # Recording ran warm-up passes whose gradients must not reach the first step.
        for parameter in parameters:
            parameter.grad = None
        self.log(f"recorded the training step's forward and backward as CUDA graphs "
                 f"(batches of {self.batch_size})")  # fmt: skip
        return graphed
