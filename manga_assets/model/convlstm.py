"""A convolutional LSTM layer (Shi et al. 2015) that reads a sequence of 2-D maps.

Shapes use B (batch), T (time: here the emission lines in wavelength order), C (channels),
H and W (map height and width).

The gate pre-activations of a step are two convolutions, ``W_x * x_t + W_h * h_{t-1} + b``: one
of the input (``input_conv``, kernel ``input_kernel_size``) and one of the previous hidden state
(``hidden_conv``, kernel ``kernel_size``). How the step is computed, and why (measured on a 2-core
AVX-512 CPU, batch 32, 19 steps, hidden 16 at 16x16 and 32 at 8x8, forward + backward):

- The input convolution may be smaller than the recurrent one. Where the input has just been
  through a 3x3 per-map convolution (every layer of the autoencoder but the decoder's first), a
  1x1 input convolution sees the same neighbourhood a 3x3 one would, at 1/9 of the FLOPs; the
  recurrent 3x3 convolution still carries structure across the map from step to step. A layer
  with both convolutions 3x3 is computed as one convolution of ``concat(x_t, h_{t-1})``.
- Per step, ``hidden_conv(h) + input_conv(x_t)`` took 0.65-0.72 of the time of one 3x3
  convolution of the concatenation. Computing ``input_conv`` over all B*T frames in one call
  instead was 1.2-1.7x slower than per step: the (B, T, 4C, H, W) tensor and its gradient cost
  more than the fewer calls save.
- A caller that knows the input's contribution more cheaply can pass it (`forward_gates`): the
  decoder's first layer reads the same latent map at every step plus a per-line constant, whose
  convolutions are computed once instead of T times.
- The input sequence is split with one ``unbind`` rather than indexed per step: autograd turns each
  ``x[:, t]`` into a zero-filled gradient the size of the whole sequence, which made the textbook
  loop 1.5x slower when the input needs a gradient (every layer after the first).
- Contiguous (NCHW) tensors, not channels_last: chunking the gate tensor along channels makes
  channels_last slices strided, which cost the gate arithmetic more than oneDNN gained
  (0.85-0.94x).
- The gate arithmetic is a few eager element-wise operations. A hand-written autograd function
  with fewer of them was no faster (1.0-1.3x slower); ``torch.compile`` of it (`use_compiled_step`)
  needs a C++ compiler (CPU) or Triton (CUDA) and gave no gain in whole training steps on the CPU,
  so it is off unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def lstm_gates(gate_inputs: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM cell update from the convolved gate inputs.

    Parameters
    ----------
    gate_inputs : Tensor, (B, 4*C, H, W)
        Pre-activations of the input, forget and output gates and the candidate, in that order.
    cell : Tensor, (B, C, H, W)
        The previous cell state.

    Returns
    -------
    hidden, cell : Tensor, (B, C, H, W) each
    """
    input_gate, forget_gate, output_gate, candidate = gate_inputs.chunk(4, dim=1)
    cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
    hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
    return hidden, cell


_compiled: dict[str, Callable] = {}


def _compiled_lstm_gates() -> Callable:
    """`lstm_gates` compiled by ``torch.compile``, once per process."""
    if not _compiled:
        # dynamic=True: one kernel for every layer and batch size (Dynamo caches per code object,
        # so all layers share it). Only the gate arithmetic is compiled, on fresh contiguous
        # tensors: passing the next step's input (a view of the sequence) as well made Dynamo
        # specialise on each layer's view layout and hit its recompilation limit. Without
        # fullgraph, hitting the limit anyway falls back to eager instead of failing a run.
        _compiled["gates"] = torch.compile(lstm_gates, dynamic=True)
    return _compiled["gates"]


class ConvLSTM(nn.Module):
    """One convolutional LSTM layer unrolled over a sequence of maps.

    At every step t, with ``*`` a 2-D convolution padded to keep H x W::

        i, f, o, g = split(W_x * x_t + W_h * h_{t-1} + b)
        c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)
        h_t = sigmoid(o) tanh(c_t)

    Parameters
    ----------
    in_channels : int
        Channels of each input map, C_in.
    hidden_channels : int
        Channels of the hidden and cell states, C.
    kernel_size : int, optional
        Odd side of the recurrent convolution's kernel, W_h (default 3); odd so that 'same'
        padding is symmetric and the maps do not drift by half a pixel per step.
    input_kernel_size : int, optional
        Odd side of the input convolution's kernel, W_x (default: ``kernel_size``).

    Raises
    ------
    ValueError
        If a size is not positive or a kernel size is even.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        input_kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"ConvLSTM needs at least one input and one hidden channel, got "
                f"in_channels={in_channels}, hidden_channels={hidden_channels}"
            )
        input_kernel_size = kernel_size if input_kernel_size is None else input_kernel_size
        for name, size in (("kernel_size", kernel_size), ("input_kernel_size", input_kernel_size)):
            if size < 1 or size % 2 == 0:
                raise ValueError(
                    f"ConvLSTM {name} must be a positive odd integer so that 'same' padding is "
                    f"symmetric, got {size}; use {max(size - 1, 1)} or {size + 1}"
                )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.input_kernel_size = input_kernel_size
        gates = 4 * hidden_channels
        self.input_conv = nn.Conv2d(
            in_channels, gates, input_kernel_size, padding=input_kernel_size // 2
        )
        self.hidden_conv = nn.Conv2d(
            hidden_channels, gates, kernel_size, padding=kernel_size // 2, bias=False
        )
        self.reset_parameters()
        self.use_compiled_step = False

    def reset_parameters(self) -> None:
        """Unit-gain initialisation over both convolutions, and an open forget gate."""
        # Gates are close to linear at initialisation: a variance of 1 / fan-in, the fan-in of a
        # gate being both convolutions', keeps the input's scale.
        fan_in = (
            self.in_channels * self.input_kernel_size**2
            + self.hidden_channels * self.kernel_size**2
        )
        with torch.no_grad():
            for conv in (self.input_conv, self.hidden_conv):
                conv.weight.normal_(0.0, fan_in**-0.5)
            self.input_conv.bias.zero_()
            # A forget-gate bias of 1 keeps the cell memory open early in training (Jozefowicz
            # et al. 2015), so gradients reach the first lines of the sequence.
            self.input_conv.bias[self.hidden_channels : 2 * self.hidden_channels] = 1.0

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, hidden_channels={self.hidden_channels}, "
            f"kernel_size={self.kernel_size}, input_kernel_size={self.input_kernel_size}"
        )

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Models saved before the two convolutions were apart hold one convolution of
        # concat(x_t, h) (weights for x first): the same layer, split here.
        joint = state_dict.pop(prefix + "conv.weight", None)
        if joint is not None and self.input_kernel_size == self.kernel_size:
            state_dict[prefix + "input_conv.weight"] = joint[:, : self.in_channels]
            state_dict[prefix + "hidden_conv.weight"] = joint[:, self.in_channels :]
            state_dict[prefix + "input_conv.bias"] = state_dict.pop(prefix + "conv.bias")
        elif joint is not None:
            state_dict[prefix + "conv.weight"] = joint  # reported as unexpected, not dropped
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the layer over a sequence.

        Parameters
        ----------
        x : Tensor, (B, T, C_in, H, W)
            The input sequence.
        state : (Tensor, Tensor), optional
            Initial hidden and cell states, each (B, C, H, W); zeros if not given.

        Returns
        -------
        outputs : Tensor, (B, T, C, H, W)
            The hidden state after every step.
        (hidden, cell) : (Tensor, Tensor), (B, C, H, W) each
            The states after the last step.
        """
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"ConvLSTM expects input of shape (batch, time, {self.in_channels}, height, "
                f"width), got {tuple(x.shape)}"
            )
        if x.shape[1] < 1:
            raise ValueError("ConvLSTM needs a sequence of at least one step")
        inputs = x.unbind(dim=1)  # T x (B, C_in, H, W); one autograd node for all steps
        if self.input_kernel_size == self.kernel_size:
            return self._forward_joint(inputs, state)
        return self.forward_gates([self.input_conv(frame) for frame in inputs], state)

    def forward_gates(
        self, input_gates: Sequence[Tensor], state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the layer from the input's contribution to the gates, ``W_x * x_t + b``.

        Parameters
        ----------
        input_gates : sequence of T Tensors, each (B, 4C, H, W)
            What `input_conv` gives for each step's input.
        state : (Tensor, Tensor), optional
            Initial hidden and cell states, each (B, C, H, W); zeros if not given.

        Returns
        -------
        As `forward`.
        """
        if not input_gates:
            raise ValueError("ConvLSTM needs a sequence of at least one step")
        batch, channels, height, width = input_gates[0].shape
        if channels != 4 * self.hidden_channels:
            raise ValueError(
                f"ConvLSTM input gates must have {4 * self.hidden_channels} channels, got "
                f"{tuple(input_gates[0].shape)}"
            )
        hidden, cell = self._initial_state(input_gates[0], (batch, height, width), state)
        gates = _compiled_lstm_gates() if self.use_compiled_step else lstm_gates
        outputs = []
        for step_gates in input_gates:
            hidden, cell = gates(self.hidden_conv(hidden) + step_gates, cell)
            outputs.append(hidden)
        return torch.stack(outputs, dim=1), (hidden, cell)

    def _forward_joint(
        self, inputs: Sequence[Tensor], state: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Equal kernels: one convolution of ``concat(x_t, h)`` per step, the faster way."""
        batch, _, height, width = inputs[0].shape
        hidden, cell = self._initial_state(inputs[0], (batch, height, width), state)
        weight = torch.cat([self.input_conv.weight, self.hidden_conv.weight], dim=1)
        bias, padding = self.input_conv.bias, self.kernel_size // 2
        gates = _compiled_lstm_gates() if self.use_compiled_step else lstm_gates
        outputs = []
        for frame in inputs:
            step_gates = F.conv2d(torch.cat([frame, hidden], dim=1), weight, bias, padding=padding)
            hidden, cell = gates(step_gates, cell)
            outputs.append(hidden)
        return torch.stack(outputs, dim=1), (hidden, cell)

    def _initial_state(
        self, like: Tensor, size: tuple[int, int, int], state: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        batch, height, width = size
        state_shape = (batch, self.hidden_channels, height, width)
        if state is None:
            return like.new_zeros(state_shape), like.new_zeros(state_shape)
        hidden, cell = state
        if tuple(hidden.shape) != state_shape or tuple(cell.shape) != state_shape:
            raise ValueError(
                f"ConvLSTM initial state must be two tensors of shape {state_shape}, got "
                f"{tuple(hidden.shape)} and {tuple(cell.shape)}"
            )
        # Views (e.g. chunks of one tensor) have other strides: one layout, one kernel.
        return hidden.contiguous(), cell.contiguous()


def set_compiled_steps(module: nn.Module, enabled: bool = True) -> int:
    """Switch every `ConvLSTM` inside ``module`` to (or from) the compiled step kernels.

    Returns
    -------
    int
        How many ConvLSTM layers were switched.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, ConvLSTM)]
    for layer in layers:
        layer.use_compiled_step = enabled
    return len(layers)


def conv_lstm_flops(
    batch: int,
    steps: int,
    in_channels: int,
    hidden_channels: int,
    height: int,
    width: int,
    kernel_size: int = 3,
    backward: bool = True,
    input_kernel_size: int | None = None,
) -> float:
    """Floating-point operations of the convolutions of one ConvLSTM layer.

    A multiply-add counts as two operations; the backward pass (gradients of inputs and weights)
    counts as twice the forward. Gate arithmetic is not counted: it is a few percent of the total.
    ``input_kernel_size`` defaults to ``kernel_size``, as in `ConvLSTM`.
    """
    input_kernel_size = kernel_size if input_kernel_size is None else input_kernel_size
    per_pixel = 4 * hidden_channels * (
        in_channels * input_kernel_size**2 + hidden_channels * kernel_size**2
    )
    forward = 2.0 * batch * steps * height * width * per_pixel
    return forward * (3.0 if backward else 1.0)
