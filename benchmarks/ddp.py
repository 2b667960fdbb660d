"""Distributed (DDP) training against one process, on the same synthetic galaxies, in one run.

Writes N synthetic 32x32 cubes, builds the training set, then trains the same model from the
same seed through `train_model`: in one process with each of ``--baseline-threads`` (default:
one rank's threads), then with ``--processes`` DDP ranks. Reports, per
run, training galaxies per second (over all epochs, validation excluded), the call's wall time
(process start included), the final and best validation chi-square per pixel, and the ratios of
the distributed run to the baseline. The load average is printed before and after: on a shared
machine it says how far the figures can be trusted.

Usage:
    python benchmarks/ddp.py                                  # CPU: 2 gloo ranks x 1 thread
    python benchmarks/ddp.py --baseline-threads 1 2           # also 1 process x 2 threads
    python benchmarks/ddp.py --galaxies 2000 --epochs 3
    python benchmarks/ddp.py --device cuda --processes 8 --bf16 --compile --galaxies 9000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for manga_assets_tests


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    import torch

    from manga_assets.model.autoencoder import ModelConfig
    from manga_assets.model.dataset import build_training_set
    from manga_assets.model.distributed import DistributedConfig
    from manga_assets.model.train import TrainConfig, train_model
    from manga_assets_tests.test_model.cubes import write_cubes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per DDP process")
    parser.add_argument(
        "--baseline-threads", type=int, nargs="+", default=None,
        help="torch threads of each single-process baseline (default: --threads)",
    )  # fmt: skip
    parser.add_argument("--variant", default="ae", choices=["ae", "vae"])
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, GPU per rank)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    args = parser.parse_args()

    baseline_threads = args.baseline_threads or [args.threads]
    print(f"torch {torch.__version__}; {load()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        root = Path(workdir)
        cubes = write_cubes(root, args.galaxies, grid=32, seed=0)
        summary = build_training_set(cubes, root / "training_set", grid=32, seed=0)
        print(f"{args.galaxies} galaxies: {summary.n_train} train / {summary.n_val} val")
        runs = []
        plan = [(1, threads) for threads in baseline_threads] + [(args.processes, args.threads)]
        for processes, threads in plan:
            train_config = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=args.device,
                num_threads=threads,
                compile=args.compile,
                bf16=args.bf16,
                patience=args.epochs + 1,
            )
            distributed = DistributedConfig(processes=processes) if processes > 1 else None
            started = time.perf_counter()
            result = train_model(
                ModelConfig(variant=args.variant),
                train_config,
                root / "training_set",
                root / f"checkpoints_{processes}x{threads}",
                fresh=True,
                distributed=distributed,
            )
            runs.append((processes, threads, time.perf_counter() - started, result))
            print(f"  {processes} process(es) done; {load()}", flush=True)

    print(
        f"\n{'processes':>9s} {'threads':>7s} {'gal/s':>8s} {'wall s':>8s} {'final val chi2':>14s} "
        f"{'best val chi2':>13s}"
    )
    for processes, threads, wall, result in runs:
        print(
            f"{processes:9d} {threads:7d} {result.galaxies_per_second:8.1f} {wall:8.1f} "
            f"{result.history[-1]['val_chi2']:14.4f} {result.best_val_chi2:13.4f}"
        )
    _, _, wall, ddp = runs[-1]
    for _, threads, base_wall, base in runs[:-1]:
        print(
            f"\nratios, {args.processes} processes / 1 process with {threads} thread(s): "
            f"galaxies/s {ddp.galaxies_per_second / base.galaxies_per_second:.2f}, wall "
            f"{wall / base_wall:.2f}, final val chi2 "
            f"{ddp.history[-1]['val_chi2'] / base.history[-1]['val_chi2']:.4f}"
        )
    print(f"{load()}")


if __name__ == "__main__":
    main()
