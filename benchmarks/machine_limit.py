"""The machine's practical FLOP/s limit, measured in the calling process: a large matrix product.

Benchmarks divide their achieved FLOP/s by this to say how close to the hardware they run.
"""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of a 4096x4096 matrix product over ``repeats`` timings."""
    n = 4096
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    # One product takes ~0.3 s on a CPU but ~1 ms on a GPU, where a batch is timed instead.
    inner = 1 if device.type == "cpu" else 50
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best
