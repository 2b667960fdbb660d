"""Training throughput and peak memory of the ConvLSTM AE and VAE on 9,000 synthetic galaxies.

Writes N synthetic 32x32 cubes (numpy) into a temporary directory, builds the training set with
`build_training_set`, then runs `train_model` for each variant with the default model
configuration and reports, per variant: training galaxies/s over the epoch (augmentation and
memmap reads included), the epoch's wall time with validation, peak resident memory (sampled) and
on CUDA peak allocated memory, the model's FLOPs per galaxy (forward + backward, counted by
torch.utils.flop_counter) and the achieved FLOP/s as a ratio of a 4096x4096 matmul timed in this
process (float32 on CPU, bfloat16 with --bf16).

By default one full epoch is timed. ``--epochs 2`` times two and reports the second (use it with
--compile, whose first epoch includes compilation). ``--default-schedule`` trains the project's
default schedule instead (TrainConfig's epochs and early-stopping patience): "wall s" is then the
time a real run's training takes, compilation and validation included. ``--galaxies`` trades
fidelity for time.

``--embed`` then times `embed_cubes` (encode, reconstruct, residual statistics: what the latents
assets run per plate) over every galaxy with each trained model, on the same device.

On a GPU the training split is held on the device by default (TrainConfig.resident_data);
``--cuda-graphs`` replays each full batch's forward and backward as CUDA graphs.

Usage:
    python benchmarks/training.py                       # CPU, eager, AE and VAE, 9000 galaxies
    python benchmarks/training.py --compile             # CPU with compiled ConvLSTM steps
    python benchmarks/training.py --device cuda --cuda-graphs --default-schedule
    python benchmarks/training.py --device cuda --bf16 --compile --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for manga_assets_tests

from machine_limit import matmul_flops_per_second  # noqa: E402

from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig  # noqa: E402
from manga_assets.model.dataset import build_training_set  # noqa: E402
from manga_assets.model.inference import embed_cubes  # noqa: E402
from manga_assets.model.train import TrainConfig, train_model  # noqa: E402
from manga_assets_tests.test_model.cubes import write_cubes  # noqa: E402


class PeakMemory:
    """Peak resident set size of this process, sampled every 20 ms in a background thread."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self.start = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def flops_per_galaxy(config: ModelConfig, batch: int = 8) -> float:
    """Convolution and matmul FLOPs of one training step (forward + backward), per galaxy."""
    model = ConvLSTMAutoencoder(config)
    x = torch.randn(batch, config.n_lines, config.grid, config.grid) * 0.3
    with FlopCounterMode(display=False) as counter:
        _, losses = model(x)
        losses["total"].backward()
    return counter.get_total_flops() / batch


def training_galaxies(
    root: Path, n: int, log: Callable[[str], None]
) -> list[tuple[str, Path]]:
    """N synthetic cubes and their training set under ``root``, written unless already there."""
    listing = root / "cubes.json"
    if listing.exists() and (root / "training_set").exists():
        print(f"reusing the {n} cubes and the training set in {root}")
        return [(plateifu, Path(path)) for plateifu, path in json.loads(listing.read_text())]
    started = time.perf_counter()
    log(f"writing {n} cubes")
    cubes = write_cubes(root, n, grid=32, seed=0)
    written = time.perf_counter()
    summary = build_training_set(cubes, root / "training_set", grid=32, seed=0, log=log)
    print(
        f"wrote {n} cubes in {written - started:.1f} s; training set ({summary.n_train} train / "
        f"{summary.n_val} val) built in {time.perf_counter() - written:.1f} s"
    )
    listing.write_text(json.dumps([(plateifu, str(path)) for plateifu, path in cubes]))
    return cubes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=9000)
    parser.add_argument("--variants", nargs="+", default=["ae", "vae"], choices=["ae", "vae"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true", help="TrainConfig.compile")
    parser.add_argument("--cuda-graphs", action="store_true", help="TrainConfig.cuda_graphs")
    parser.add_argument(
        "--resident",
        choices=["auto", "yes", "no"],
        default="auto",
        help="TrainConfig.resident_data (auto: on a GPU when it fits)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="time the last of these epochs")
    parser.add_argument(
        "--default-schedule",
        action="store_true",
        help="train TrainConfig's default epochs with its early stopping (overrides --epochs)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument(
        "--data", type=Path, default=None, help="keep the galaxies here and reuse them next time"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.add_argument("--embed", action="store_true", help="time embedding every galaxy")
    args = parser.parse_args()

    def log(message: str) -> None:
        if not args.quiet:
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    defaults = TrainConfig()
    epochs = defaults.epochs if args.default_schedule else args.epochs
    # Outside the default schedule every epoch runs, so that the last one is the timed one.
    patience = defaults.patience if args.default_schedule else epochs + 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"bf16 {args.bf16}, compile {args.compile}, CUDA graphs {args.cuda_graphs}, "
        f"resident data {args.resident}, {args.galaxies} galaxies, "
        f"batch {args.batch_size}, {epochs} epochs, patience {patience}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        root = args.data / str(args.galaxies) if args.data else Path(workdir)
        cubes = training_galaxies(root, args.galaxies, log)
        if not (args.embed or args.data):
            for path in (root / "cubes").rglob("*.npz"):  # free the disk and page cache
                path.unlink()

        dtype = torch.bfloat16 if args.bf16 else torch.float32
        matmul = matmul_flops_per_second(device, dtype)
        print(f"4096x4096 {str(dtype).removeprefix('torch.')} matmul: {matmul / 1e9:.1f} GFLOP/s")
        print(
            f"\n{'variant':8s} {'params':>8s} {'gal/s':>8s} {'epoch s':>8s} {'GFLOP/gal':>10s} "
            f"{'GFLOP/s':>8s} {'/matmul':>8s} {'peak RSS':>9s} {'+RSS':>8s} {'peak GPU':>9s} "
            f"{'val/base':>9s} {'epochs':>6s} {'wall s':>7s}"
        )
        for variant in args.variants:
            model_config = ModelConfig(variant=variant)
            train_config = TrainConfig(
                epochs=epochs,
                batch_size=args.batch_size,
                device=str(device),
                num_threads=args.threads,
                compile=args.compile,
                bf16=args.bf16,
                patience=patience,
                cuda_graphs=args.cuda_graphs,
                resident_data={"auto": None, "yes": True, "no": False}[args.resident],
            )
            flops = flops_per_galaxy(model_config)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with PeakMemory() as memory:
                result = train_model(
                    model_config,
                    train_config,
                    root / "training_set",
                    Path(workdir) / f"ck_{variant}",
                    log=log,
                )
            last = result.history[-1]
            rate = last["galaxies_per_second"]
            gpu_peak = (
                f"{torch.cuda.max_memory_allocated() / 2**30:8.2f}G"
                if device.type == "cuda"
                else f"{'-':>9s}"
            )
            print(
                f"{variant:8s} {result.n_parameters:8d} {rate:8.1f} {last['seconds']:8.1f} "
                f"{flops / 1e9:10.2f} {flops * rate / 1e9:8.1f} {flops * rate / matmul:8.2f} "
                f"{memory.peak / 2**30:8.2f}G {(memory.peak - memory.start) / 2**30:7.2f}G "
                f"{gpu_peak} {result.best_val_chi2 / result.baseline_val_chi2:9.3f} "
                f"{len(result.history):6d} {result.wall_seconds:7.1f}"
            )
            if device.type == "cuda":
                share = flops * rate / matmul_flops_per_second(device, torch.bfloat16)
                print(f"{variant:8s} share of this device's bf16 matmul: {share:.3f}")
            if args.embed:
                model = result.model.to(device)
                started = time.perf_counter()
                embedded = embed_cubes(model, model_config, cubes, batch_size=256, device=device)
                seconds = time.perf_counter() - started
                count = len(embedded.latents)
                print(f"{variant:8s} embedded {count} galaxies in {seconds:.1f} s: "
                      f"{count / seconds:.0f} galaxies/s")  # fmt: skip
    print(
        "\ngal/s: training galaxies per second over the timed epoch (memmap reads and augmentation"
        " included, validation excluded); epoch s: the epoch with validation; +RSS: peak RSS"
        " above the RSS before training (the memory-mapped training set's pages count in RSS);"
        " val/base: validation chi-square of the best epoch over the mean-map baseline's;"
        " epochs: epochs trained; wall s: the whole training call (compilation included)."
    )


if __name__ == "__main__":
    main()
