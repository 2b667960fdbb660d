"""Training speed of this checkout against another commit, on the same galaxies, in one run.

    python benchmarks/training_versus.py --baseline a9b208f [--galaxies 1500] [--variants ae]
                                         [--repeats 3] [--epochs 1] [--threads 2]
                                         [--device cpu] [--embed]

Writes N synthetic 32x32 cubes and one training set, checks the baseline commit out into a
temporary git worktree, then times each code's training on that training set, alternating
baseline and this checkout ``--repeats`` times so that a machine's drift hits both alike. Each
timing is a fresh process (the two codes are the same package) running `train_model` with the
default model and training configuration for ``--epochs`` epochs (the last one timed), and
measuring a 4096x4096 float32 matmul on the same device beside it.

With ``--embed`` each timing then embeds every galaxy with the trained model (`embed_cubes`:
encode, reconstruct and the residual statistics, what the latents assets run per plate).

Prints, per code and variant, the median training galaxies/s, FLOPs per galaxy (forward and
backward, counted by torch.utils.flop_counter), galaxies/s per matmul GFLOP/s, the share of the
matmul rate reached and the validation chi-square over the mean map's after the last epoch;
then the ratios of this checkout to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process with one code's package first on sys.path (and checked to be the one
# imported); only APIs both codes have.
RUNNER = r"""
import json, sys, time
from pathlib import Path

import manga_assets
code = Path(sys.argv[2]).resolve()
assert Path(manga_assets.__file__).resolve().is_relative_to(code), manga_assets.__file__
import torch
from torch.utils.flop_counter import FlopCounterMode
from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig
from manga_assets.model.train import TrainConfig, train_model

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
device = torch.device(args["device"])
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
n, repeats = 4096, 1 if device.type == "cpu" else 50
a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
a @ b
sync()
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    best = min(best, (time.perf_counter() - start) / repeats)
matmul = 2 * n**3 / best

config = ModelConfig(variant=args["variant"])
model = ConvLSTMAutoencoder(config)
x = torch.randn(8, config.n_lines, config.grid, config.grid) * 0.3
with FlopCounterMode(display=False) as counter:
    model(x)[1]["total"].backward()
flops = counter.get_total_flops() / 8

train_config = TrainConfig(epochs=args["epochs"], patience=args["epochs"] + 1,
                           num_threads=args["threads"], device=args["device"])
result = train_model(config, train_config, Path(args["training_set"]), Path(args["checkpoints"]),
                     fresh=True)
last = result.history[-1]
timings = {
    "galaxies_per_second": last["galaxies_per_second"],
    "flops_per_galaxy": flops,
    "matmul_flops": matmul,
    "val_over_base": result.best_val_chi2 / result.baseline_val_chi2,
}
if args["cubes"]:
    from manga_assets.model.inference import embed_cubes
    listing = json.loads(Path(args["cubes"]).read_text())
    cubes = [(plateifu, Path(path)) for plateifu, path in listing]
    start = time.perf_counter()
    embed_cubes(result.model.to(device), config, cubes, batch_size=64, device=device)
    timings["embedded_per_second"] = len(cubes) / (time.perf_counter() - start)
print(json.dumps(timings))
"""


def time_training(code: Path, variant: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One timing of one code, in a fresh process."""
    settings = {
        "variant": variant,
        "epochs": args.epochs,
        "threads": args.threads,
        "device": args.device,
        "training_set": str(workdir / "training_set"),
        "checkpoints": str(workdir / f"checkpoints_{variant}"),
        "cubes": str(workdir / "cubes.json") if args.embed else "",
    }
    environment = {**os.environ, "PYTHONPATH": str(code)}
    finished = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(settings), str(code)],
        env=environment,
        cwd=workdir,  # not a checkout: "python -c" puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"training with the code in {code} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def summary(timings: list[dict]) -> dict:
    """Medians over repeats, and the derived figures."""
    median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
    per_matmul = [t["galaxies_per_second"] / (t["matmul_flops"] / 1e9) for t in timings]
    share = [t["galaxies_per_second"] * t["flops_per_galaxy"] / t["matmul_flops"] for t in timings]
    return {
        **median,
        "per_matmul_gflops": statistics.median(per_matmul),
        "matmul_share": statistics.median(share),
        "rates": [round(t["galaxies_per_second"], 1) for t in timings],
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from manga_assets.model.dataset import build_training_set
    from manga_assets_tests.test_model.cubes import write_cubes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a commit, branch or tag")
    parser.add_argument("--galaxies", type=int, default=1500)
    parser.add_argument("--variants", nargs="+", default=["ae"], choices=["ae", "vae"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--embed", action="store_true", help="also time embedding every galaxy")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        baseline = workdir / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                        str(baseline), args.baseline], check=True)  # fmt: skip
        try:
            cubes = write_cubes(workdir, args.galaxies, grid=32, seed=0)
            built = build_training_set(cubes, workdir / "training_set", grid=32, seed=0)
            listing = [(plateifu, str(path)) for plateifu, path in cubes]
            (workdir / "cubes.json").write_text(json.dumps(listing))
            print(f"{args.galaxies} galaxies ({built.n_train} train / {built.n_val} val), "
                  f"{args.epochs} epoch(s) timed, {args.device}, {args.threads} threads, "
                  f"{args.repeats} repeats alternating")  # fmt: skip
            codes = {f"baseline {args.baseline}": baseline, "this checkout": ROOT}
            results: dict[tuple[str, str], list[dict]] = {}
            for repeat in range(args.repeats):
                order = list(codes.items())
                for name, code in order if repeat % 2 == 0 else reversed(order):
                    for variant in args.variants:
                        timing = time_training(code, variant, args, workdir)
                        results.setdefault((name, variant), []).append(timing)
                        rate = timing["galaxies_per_second"]
                        embedded = timing.get("embedded_per_second")
                        also = f", embedded {embedded:.0f} galaxies/s" if embedded else ""
                        print(f"  {name:24s} {variant}: {rate:.1f} galaxies/s{also}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(baseline)], check=False)  # fmt: skip

    print("\n| code | variant | galaxies/s (median; each) | GFLOP/galaxy | galaxies/s per matmul "
          "GFLOP/s | share of matmul | val chi2 / mean map |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|")
    table = {key: summary(timings) for key, timings in results.items()}
    for (name, variant), row in table.items():
        print(f"| {name} | {variant} | {row['galaxies_per_second']:.1f} ({row['rates']}) | "
              f"{row['flops_per_galaxy'] / 1e9:.2f} | {row['per_matmul_gflops']:.3f} | "
              f"{row['matmul_share']:.2f} | {row['val_over_base']:.3f} |")  # fmt: skip
    base_name, this_name = list(codes)
    for variant in args.variants:
        base, this = table[(base_name, variant)], table[(this_name, variant)]
        print(f"ratios {variant} (this / baseline): galaxies/s "
              f"{this['galaxies_per_second'] / base['galaxies_per_second']:.2f}, per matmul "
              f"GFLOP/s {this['per_matmul_gflops'] / base['per_matmul_gflops']:.2f}, FLOPs per "
              f"galaxy {this['flops_per_galaxy'] / base['flops_per_galaxy']:.2f}")  # fmt: skip
        if args.embed:
            print(f"embedding {variant}: {base['embedded_per_second']:.0f} -> "
                  f"{this['embedded_per_second']:.0f} galaxies/s, ratio "
                  f"{this['embedded_per_second'] / base['embedded_per_second']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
