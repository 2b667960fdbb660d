"""ConvLSTM layer speed: manga_assets.model.convlstm.ConvLSTM against a straightforward reference.

Times forward + backward at batch 32, 19 steps, 32x32 maps, hidden 32, kernel 3, for a first layer
(1 input channel) and a hidden-to-hidden layer (32 input channels). Prints, per case, the speed-up
over a reference written here (convolve concat(x_t, h) at every step, plain autograd), the largest
output and gradient difference for the same weights, the achieved convolution FLOP/s (backward
counted as twice the forward) and its ratio to a 4096x4096 float32 matmul timed in this process.
Alternatives that were tried and rejected are timed too, so the choice can be re-checked on other
hardware.

Usage: python benchmarks/convlstm.py [--threads N] [--repeats R] [--device cpu|cuda] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from machine_limit import matmul_flops_per_second, synchronize  # benchmarks/ is on sys.path

from manga_assets.model.convlstm import ConvLSTM, conv_lstm_flops

BATCH, STEPS, SIZE, HIDDEN, KERNEL = 32, 19, 32, 32, 3


def reference_forward(layer: ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """The textbook ConvLSTM: one convolution of concat(x_t, h) per step, plain autograd."""
    batch, steps, _, height, width = x.shape
    hidden = x.new_zeros(batch, layer.hidden_channels, height, width)
    cell = torch.zeros_like(hidden)
    outputs = []
    for step in range(steps):
        gates = F.conv2d(
            torch.cat([x[:, step], hidden], dim=1),
            layer.conv.weight,
            layer.conv.bias,
            padding=KERNEL // 2,
        )
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outputs.append(hidden)
    return torch.stack(outputs, dim=1)


def batched_input_forward(layer: ConvLSTM, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Rejected alternative: one input convolution over all B*T frames, a hidden conv per step."""
    batch, steps, in_channels, height, width = x.shape
    weight_x = layer.conv.weight[:, :in_channels].contiguous()
    weight_h = layer.conv.weight[:, in_channels:].contiguous()
    frames = x.transpose(0, 1).reshape(steps * batch, in_channels, height, width)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    frames = frames.contiguous(memory_format=memory_format)
    gates_x = F.conv2d(frames, weight_x, layer.conv.bias, padding=KERNEL // 2)
    gates_x = gates_x.view(steps, batch, -1, height, width)  # (T, B, 4C, H, W)
    hidden = x.new_zeros(batch, layer.hidden_channels, height, width)
    hidden = hidden.contiguous(memory_format=memory_format)
    cell = torch.zeros_like(hidden)
    outputs = []
    for gates_x_step in gates_x.unbind(0):
        gates = gates_x_step + F.conv2d(hidden, weight_h, padding=KERNEL // 2)
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outputs.append(hidden)
    return torch.stack(outputs, dim=1)


def channels_last_reference(layer: ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """Rejected alternative: the reference with channels_last tensors (oneDNN's native layout)."""
    batch, steps, _, height, width = x.shape
    hidden = x.new_zeros(batch, layer.hidden_channels, height, width)
    hidden = hidden.contiguous(memory_format=torch.channels_last)
    cell = torch.zeros_like(hidden)
    weight = layer.conv.weight.contiguous(memory_format=torch.channels_last)
    outputs = []
    for step in range(steps):
        conv_input = torch.cat([x[:, step], hidden], dim=1)
        conv_input = conv_input.contiguous(memory_format=torch.channels_last)
        gates = F.conv2d(conv_input, weight, layer.conv.bias, padding=KERNEL // 2)
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outputs.append(hidden)
    return torch.stack(outputs, dim=1)


def run_case(
    in_channels: int, device: torch.device, repeats: int, compile_step: bool, matmul: float
) -> None:
    torch.manual_seed(0)
    layer = ConvLSTM(in_channels, HIDDEN, KERNEL).to(device)
    x = torch.randn(BATCH, STEPS, in_channels, SIZE, SIZE, device=device, requires_grad=True)
    upstream = torch.randn(BATCH, STEPS, HIDDEN, SIZE, SIZE, device=device)
    parameters = [x, layer.conv.weight, layer.conv.bias]

    def module_forward(compiled: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(inputs: torch.Tensor) -> torch.Tensor:
            layer.use_compiled_step = compiled
            return layer(inputs)[0]

        return forward

    candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "reference (concat, autograd)": lambda inputs: reference_forward(layer, inputs),
        "ConvLSTM (eager)": module_forward(False),
    }
    if compile_step:
        candidates["ConvLSTM (compiled step)"] = module_forward(True)
    candidates["alt: batched input conv"] = lambda inputs: batched_input_forward(
        layer, inputs, channels_last=False
    )
    candidates["alt: batched input conv, channels_last"] = lambda inputs: batched_input_forward(
        layer, inputs, channels_last=True
    )
    candidates["alt: reference, channels_last"] = lambda inputs: channels_last_reference(
        layer, inputs
    )

    def fwd_bwd(forward: Callable[[torch.Tensor], torch.Tensor]):
        outputs = forward(x)
        grads = torch.autograd.grad(outputs, parameters, upstream)
        return outputs, grads

    reference_out, reference_grads = fwd_bwd(candidates["reference (concat, autograd)"])
    differences = {}
    for name, forward in candidates.items():
        outputs, grads = fwd_bwd(forward)  # also the warm-up (and the compilation)
        output_diff = (outputs - reference_out).abs().max().item()
        grad_diff = max(
            ((g - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
            for g, r in zip(grads, reference_grads, strict=True)
        )
        differences[name] = (output_diff, grad_diff)
    del reference_out, reference_grads, outputs, grads

    timings: dict[str, list[float]] = {name: [] for name in candidates}
    # Interleaved rounds: other processes share this machine, so a slow spell hits every
    # candidate rather than one.
    for _ in range(repeats):
        for name, forward in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fwd_bwd(forward)
            synchronize(device)
            timings[name].append(time.perf_counter() - start)

    flops = conv_lstm_flops(BATCH, STEPS, in_channels, HIDDEN, SIZE, SIZE, KERNEL)
    reference_time = min(timings["reference (concat, autograd)"])
    print(
        f"\ncase: in_channels={in_channels}, hidden={HIDDEN}, batch={BATCH}, steps={STEPS}, "
        f"{SIZE}x{SIZE}, kernel={KERNEL}: {flops / 1e9:.1f} GFLOP per forward+backward"
    )
    print(
        f"{'candidate':40s} {'best s':>8s} {'median s':>9s} {'speed-up':>9s} {'GFLOP/s':>8s} "
        f"{'/matmul':>8s} {'max|dy|':>9s} {'rel|dgrad|':>10s}"
    )
    for name, times in timings.items():
        best = min(times)
        output_diff, grad_diff = differences[name]
        print(
            f"{name:40s} {best:8.3f} {statistics.median(times):9.3f} {reference_time / best:9.2f} "
            f"{flops / best / 1e9:8.1f} {flops / best / matmul:8.2f} {output_diff:9.1e} "
            f"{grad_diff:10.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"mkldnn {torch.backends.mkldnn.is_available()}"
    )
    matmul_before = matmul_flops_per_second(device, torch.float32, args.repeats)
    for in_channels in (1, HIDDEN):
        run_case(in_channels, device, args.repeats, not args.no_compile, matmul_before)
    matmul_after = matmul_flops_per_second(device, torch.float32, args.repeats)
    print(
        f"\n4096x4096 float32 matmul: {matmul_before / 1e9:.1f} GFLOP/s before the cases, "
        f"{matmul_after / 1e9:.1f} after (ratios above use the first)"
    )


if __name__ == "__main__":
    main()
