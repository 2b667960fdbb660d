"""A DR17-sized release through the whole graph, stage by stage, with the Dagster CLI.

    python benchmarks/survey_scale.py [--dir survey] [--plates N] [--epochs 2 | --default-schedule]

Writes (or reuses) the lean DR17-sized synthetic release (11,273 cubes on 664 plates, see
``manga_assets.synthetic.spec.DR17_SURVEY``) under ``DIR/mirror``, serves it on 127.0.0.1, and on
a fresh instance and data directory runs every stage as its own ``dagster job execute`` command
(multiprocess executor: every step in its own process):

    catalog        catalog_job
    acquisition    acquisition_job per range of ``--batch-plates`` plates (MAPS files, cubes;
                   default PLATES_PER_RUN, as the new-plates sensor requests them)
    models         models_job (training set, AE and VAE side by side, ``--epochs`` each)
    latents        latents_job per range of plates
    analyses       analyses_job (latent tables, UMAP, scores, neighbours, AGN sample, report)

then ``manga-assets run`` again with nothing changed. Each command runs under a small wrapper
process that, once the command's whole process tree has exited, reads its own
``getrusage(RUSAGE_CHILDREN)`` (CPU time, and the peak resident memory of the largest process of
the tree) and ``/proc/self/io`` (bytes read and written by the tree). Dagster's overhead is a
stage's wall time outside every step's compute (STEP_START..STEP_SUCCESS in the event log): CLI
start-up, code-location loads, run and step process start-up, event writes.

Writes ``benchmarks/RESULTS.md`` and ``benchmarks/survey_scale.png`` (``--results`` to move them).
``--plates N`` runs the first N plates of the same release (a quick look; RESULTS.md then says so).
``--default-schedule`` trains the models as a real run does (the model assets' default epochs,
early stopping and quality gate) instead of ``--epochs`` with the gate lowered.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFINITIONS_MODULE = "manga_assets.definitions"
GIB = 1024**3


@dataclass
class Stage:
    """One command of the benchmark and what it cost."""

    name: str
    command: list[str]
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    read_bytes: int = 0
    written_bytes: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)
    in_steps_s: float = 0.0
    runs: int = 0
    returncode: int = 0

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.wall_s - self.in_steps_s)


# -- the wrapper process: run a command, then report the resources of its whole process tree ------


PR_SET_CHILD_SUBREAPER = 36


def measure_child(report: Path, command: list[str], log: Path) -> int:
    """Run ``command``, then write its tree's wall, CPU, peak RSS and I/O to ``report``."""
    import ctypes

    # Processes the command leaves behind (the multiprocess executor's forkserver outlives its
    # run by a moment) are re-parented to this process and reaped here, so their usage counts.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    start = time.perf_counter()
    with log.open("ab") as sink:
        returncode = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Reaped children's I/O counters are added to their parent's, so this process's counters
    # hold the whole tree's (plus this small wrapper's own).
    io = dict(
        line.split(": ") for line in Path("/proc/self/io").read_text().splitlines() if ": " in line
    )
    report.write_text(
        json.dumps(
            {
                "returncode": returncode,
                "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_bytes": usage.ru_maxrss * 1024,
                "rchar": int(io.get("rchar", 0)),
                "wchar": int(io.get("wchar", 0)),
                "write_bytes": int(io.get("write_bytes", 0)),
            }
        )
    )
    return returncode


# -- the benchmark ---------------------------------------------------------------------------------


def build_or_reuse_release(directory: Path):
    """The DR17-sized release under ``directory``; written only when missing."""
    from manga_assets.cli import build_release_with_bar
    from manga_assets.sas.paths import dapall_location
    from manga_assets.sas.releases import get_release
    from manga_assets.synthetic.spec import DR17_SURVEY

    marker = directory / "spec.json"
    wanted = json.dumps(DR17_SURVEY.__dict__, default=str, sort_keys=True)
    release = get_release(DR17_SURVEY.release)
    if marker.exists() and marker.read_text() == wanted:
        if (directory / dapall_location(release)).exists():
            print(f"reusing the DR17-sized release in {directory}")
            return None
    started = time.perf_counter()
    summary = build_release_with_bar(directory, DR17_SURVEY, "writing the DR17-sized release")
    marker.write_text(wanted)
    print(f"{summary.n_galaxies} cubes, {summary.maps_bytes / GIB:.2f} GiB of MAPS files, "
          f"written in {time.perf_counter() - started:.0f} s")  # fmt: skip
    return summary


def dagster_job(job: str, tags: dict | None = None, config: Path | None = None) -> list[str]:
    command = [str(Path(sys.executable).parent / "dagster"), "job", "execute"]
    command += ["-m", DEFINITIONS_MODULE, "-j", job]
    if tags:
        command += ["--tags", json.dumps(tags)]
    if config:
        command += ["-c", str(config)]
    return command


class Bench:
    """Runs stages under the measuring wrapper and reads their runs back from the instance."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.stages: list[Stage] = []
        (work / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, command: list[str]) -> Stage:
        from dagster import DagsterInstance

        report = self.work / "logs" / f"{len(self.stages):03d}-{name}.json"
        log = report.with_suffix(".log")
        wrapper = [sys.executable, __file__, "measure", str(report), str(log), "--", *command]
        with DagsterInstance.get() as instance:
            known = {run.run_id for run in instance.get_runs()}
        subprocess.run(wrapper, env=self.env, check=False)
        measured = json.loads(report.read_text())
        if measured["returncode"] != 0:
            raise SystemExit(f"stage {name} failed (exit {measured['returncode']}); see {log}")
        stage = Stage(
            name=name,
            command=command,
            wall_s=measured["wall_s"],
            cpu_s=measured["cpu_s"],
            peak_rss_bytes=measured["peak_rss_bytes"],
            read_bytes=measured["rchar"],
            written_bytes=measured["wchar"],
            returncode=measured["returncode"],
        )
        with DagsterInstance.get() as instance:
            new_runs = [run for run in instance.get_runs() if run.run_id not in known]
            stage.runs = len(new_runs)
            intervals = []
            for run in new_runs:
                for step, begin, end in step_intervals(instance, run.run_id):
                    stage.step_seconds[step] = stage.step_seconds.get(step, 0.0) + end - begin
                    intervals.append((begin, end))
        stage.in_steps_s = union_length(intervals)
        self.stages.append(stage)
        print(f"{name:<28} {stage.wall_s:8.1f} s wall {stage.cpu_s:8.1f} s CPU "
              f"{stage.peak_rss_bytes / GIB:5.2f} GiB peak  Dagster "
              f"{stage.overhead_s:6.1f} s", flush=True)  # fmt: skip
        return stage


def step_intervals(instance, run_id: str) -> list[tuple[str, float, float]]:
    """(step, start, end) of every step of a run, from STEP_START to its success or failure."""
    from dagster import DagsterEventType

    starts: dict[str, float] = {}
    spans = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            if event.step_key in starts:
                step = event.step_key.replace("__", "/")
                spans.append((step, starts[event.step_key], record.timestamp))
    return spans


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals."""
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(intervals):
        if end > reach:
            total += end - max(begin, reach)
            reach = end
    return total


def run_survey(args: argparse.Namespace) -> tuple[Bench, dict]:
    import pandas as pd
    from dagster import DagsterInstance

    from manga_assets.defs.constants import PLATES_PARTITION
    from manga_assets.defs.sensors import batches, plate_range_tags
    from manga_assets.mirror.server import MirrorServer
    from manga_assets.synthetic.spec import DR17_SURVEY

    directory = args.dir.resolve()
    mirror = directory / "mirror"
    build_or_reuse_release(mirror)
    work = directory / "run"
    shutil.rmtree(work, ignore_errors=True)
    home = work / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    data = work / "data"

    with MirrorServer(mirror) as server:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "MANGA_SAS_URL": server.url,
            "MANGA_RELEASE": DR17_SURVEY.release,
            "MANGA_DATA_DIR": str(data),
            # Two model steps train side by side: one torch thread each on a 2-core machine.
            "MANGA_TORCH_THREADS": str(args.torch_threads),
        }
        os.environ["DAGSTER_HOME"] = str(home)
        bench = Bench(work, env)
        configs = work / "config"
        configs.mkdir()

        catalog_config = configs / "catalog.yaml"
        plates = DR17_SURVEY.plates[: args.plates] if args.plates else []
        catalog_config.write_text(
            json.dumps({"ops": {"catalog": {"config": {"plates": plates, "max_galaxies": 0}}}})
        )
        bench.run("catalog", dagster_job("catalog_job", config=catalog_config))

        # What new_plates_sensor does on its next tick: one partition per catalogue plate.
        catalog = pd.read_parquet(data / "products" / "catalog.parquet")
        keys = [str(plate) for plate in sorted(catalog["plate"].unique())]
        with DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(PLATES_PARTITION, keys)

        ranges = [(batch[0], batch[-1]) for batch in batches(keys, args.batch_plates)]
        for first, last in ranges:
            tags = plate_range_tags(first, last)
            bench.run(f"acquisition {first}..{last}", dagster_job("acquisition_job", tags))

        models_config = configs / "models.yaml"
        # Two epochs time the pipeline; they do not make a model that halves the mean-map
        # baseline's loss, so the blocking check's bar is lowered and the ratio reported.
        training = {} if args.default_schedule else {"epochs": args.epochs, "min_fev": args.min_fev}
        models_config.write_text(
            json.dumps({"ops": {f"{v}__model": {"config": training} for v in ("ae", "vae")}})
        )
        bench.run("models", dagster_job("models_job", config=models_config))

        for first, last in ranges:
            tags = plate_range_tags(first, last)
            bench.run(f"latents {first}..{last}", dagster_job("latents_job", tags))

        # The report's default settings, as the rerun's: a report made with the synthetic truth
        # table records that setting, and the rerun would make it again.
        bench.run("analyses", dagster_job("analyses_job"))

        rerun = [str(Path(sys.executable).parent / "manga-assets"), "run"]
        if not args.default_schedule:
            rerun += ["--epochs", str(args.epochs), "--min-fev", str(args.min_fev)]
        if args.plates:
            rerun += ["--plates", *map(str, plates)]
        bench.run("no-change rerun", rerun)

    products = data / "products"
    features = pd.concat(pd.read_parquet(p) for p in (products / "features").glob("*.parquet"))
    models = {
        variant: json.loads((products / "models" / variant / "metrics.json").read_text())
        for variant in ("ae", "vae")
    }
    counts = {
        "models": {
            variant: {
                "val_chi2": m["best_val_chi2"],
                "fev": m["quality"]["fev"],
                "training_seconds": m["wall_seconds"],
                "galaxies_per_second": m["galaxies_per_second"],
                "train_galaxies": m["n_train"],
                "val_galaxies": m["n_val"],
                "epochs": len(m["history"]),
                "best_epoch": m["best_epoch"],
                "gate": "pass" if m["quality"]["passed"] else "fail",
            }
            for variant, m in models.items()
        },
        "catalogue_galaxies": len(catalog),
        "plates": len(keys),
        "cubes": int((features["status"] == "ok").sum()),
        "products_bytes": sum(p.stat().st_size for p in products.rglob("*") if p.is_file()),
        "mirror_bytes": sum(p.stat().st_size for p in (data / "sas").rglob("*") if p.is_file()),
    }
    return bench, counts


# -- the report ------------------------------------------------------------------------------------

GROUPS = ("catalog", "acquisition", "models", "latents", "analyses", "no-change rerun")


def grouped(stages: list[Stage]) -> list[Stage]:
    """Stages summed by kind (all acquisition ranges as one row, ...); peak RSS is the max."""
    rows = []
    for group in GROUPS:
        members = [s for s in stages if s.name.split(" ")[0] == group.split(" ")[0]]
        if group == "no-change rerun":
            members = [s for s in stages if s.name == group]
        if not members:
            continue
        total = Stage(name=group, command=members[0].command, runs=sum(s.runs for s in members))
        for stage in members:
            total.wall_s += stage.wall_s
            total.cpu_s += stage.cpu_s
            total.peak_rss_bytes = max(total.peak_rss_bytes, stage.peak_rss_bytes)
            total.read_bytes += stage.read_bytes
            total.written_bytes += stage.written_bytes
            total.in_steps_s += stage.in_steps_s
            for step, seconds in stage.step_seconds.items():
                total.step_seconds[step] = total.step_seconds.get(step, 0.0) + seconds
        rows.append(total)
    return rows


def machine_description() -> str:
    import dagster
    import torch

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {cores} cores, {memory:.0f} GiB memory, {gpu}; Python "
        f"{platform.python_version()}, dagster {dagster.__version__}, torch {torch.__version__}"
    )


def write_chart(rows: list[Stage], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.8), dpi=110)
    axes = figure.subplots()
    names = [row.name for row in rows][::-1]
    work = [row.wall_s - row.overhead_s for row in rows][::-1]
    overhead = [row.overhead_s for row in rows][::-1]
    axes.barh(names, work, color="#4c72b0", label="in asset steps")
    axes.barh(names, overhead, left=work, color="#dd8452", label="Dagster (CLI, runs, steps)")
    for y, (w, o) in enumerate(zip(work, overhead, strict=True)):
        axes.text(w + o, y, f" {w + o:.0f} s", va="center", fontsize=8)
    axes.set_xlabel("wall time (s)")
    axes.set_title("Where the time of a DR17-sized run goes")
    axes.legend(loc="lower right", fontsize=8)
    axes.set_xlim(0, max(w + o for w, o in zip(work, overhead, strict=True)) * 1.15)
    figure.tight_layout()
    figure.savefig(path)


OTHER_RESULTS = "<!-- Other benchmarks below; survey_scale.py keeps them. -->"


def write_results(bench: Bench, counts: dict, args: argparse.Namespace, path: Path) -> None:
    rows = grouped(bench.stages)
    full = [row for row in rows if row.name != "no-change rerun"]
    total_wall = sum(row.wall_s for row in full)
    overhead = sum(row.overhead_s for row in full)
    acquisition = next(row for row in rows if row.name == "acquisition")
    rerun = next(row for row in rows if row.name == "no-change rerun")
    steps = {}
    for row in full:
        steps.update(row.step_seconds)
    chart = path.with_name("survey_scale.png")
    write_chart(rows, chart)

    command = " ".join(["python", "benchmarks/survey_scale.py", *sys.argv[1:]])
    schedule = (
        "the default training schedule and quality gate (a real run's training)"
        if args.default_schedule
        else f"{args.epochs} epochs per model, the models' blocking check at "
        f"min_fev={args.min_fev:g} (a timing run, not a science run)"
    )
    lines = [
        "# Survey-scale run",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{command}`; `make bench-survey` runs it on "
        "`survey/`.",
        "",
        f"- Machine: {machine_description()}.",
        f"- Release: lean synthetic DR17-sized release served on 127.0.0.1: "
        f"{counts['catalogue_galaxies']:,} catalogue galaxies on {counts['plates']} plates, "
        f"{counts['cubes']:,} cubes extracted; {counts['mirror_bytes'] / GIB:.2f} GiB of MAPS "
        f"files downloaded, {counts['products_bytes'] / GIB:.2f} GiB of products.",
        f"- Every stage is a `dagster job execute` command (multiprocess executor), plates in "
        f"ranges of {args.batch_plates}; {schedule}, "
        f"MANGA_TORCH_THREADS={args.torch_threads}. The rerun is "
        f"`manga-assets run` with nothing changed (in-process executor, as users run it).",
        "",
        "| stage | runs | wall (s) | CPU (s) | peak RSS of largest process (GiB) | read (GiB) "
        "| written (GiB) | Dagster overhead (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.runs} | {row.wall_s:.1f} | {row.cpu_s:.1f} | "
            f"{row.peak_rss_bytes / GIB:.2f} | {row.read_bytes / GIB:.2f} | "
            f"{row.written_bytes / GIB:.2f} | {row.overhead_s:.1f} |"
        )
    lines += [
        f"| **full run** | {sum(r.runs for r in full)} | **{total_wall:.1f}** | "
        f"{sum(r.cpu_s for r in full):.1f} | {max(r.peak_rss_bytes for r in full) / GIB:.2f} | "
        f"{sum(r.read_bytes for r in full) / GIB:.2f} | "
        f"{sum(r.written_bytes for r in full) / GIB:.2f} | {overhead:.1f} |",
        "",
        "Read and written count every byte through read()/write() system calls of the stage's "
        "process tree (files, sockets and pipes): downloads are counted once as socket reads and "
        "once as file writes.",
        "",
        "Time inside the steps (sum over runs; steps of one run may overlap):",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {step} | {seconds:.1f} |" for step, seconds in sorted(steps.items())),
        "",
        "## Targets",
        "",
        f"- Peak memory of any process: **{max(r.peak_rss_bytes for r in rows) / GIB:.2f} GiB** "
        f"(target < 8 GiB).",
        f"- Download plus extraction: **{counts['cubes'] / acquisition.wall_s:.1f} galaxies/s** "
        f"over the acquisition stage's wall time, Dagster included (target >= 15).",
        f"- Dagster overhead: **{overhead:.0f} s of {total_wall:.0f} s = "
        f"{overhead / total_wall:.1%}** of the full run (target < 10%).",
        f"- No-change rerun: **{rerun.wall_s:.1f} s = {rerun.wall_s / total_wall:.2%}** of the "
        f"full run (target < 2%).",
        *(
            [f"- End to end with the default schedule: **{total_wall / 60:.1f} minutes** on "
             f"{os.cpu_count()} CPU cores (target < 90 on 2 cores, < 15 on one GPU machine)."]
            if args.default_schedule
            else []
        ),
        "",
        "Models after the run (validation chi-square per valid pixel, 1 = the noise, and the "
        "share of the mean map's excess it removes, FEV):",
        "",
        "| model | train / val galaxies | epochs (best) | training (s) | galaxies/s "
        "| val chi2 per pixel (FEV) | gate |",
        "|---|---:|---:|---:|---:|---:|---|",
        *(
            f"| {variant} | {m['train_galaxies']:,} / {m['val_galaxies']:,} | "
            f"{m['epochs']} ({m['best_epoch']}) | {m['training_seconds']:.0f} | "
            f"{m['galaxies_per_second']:.0f} | {m['val_chi2']:.3f} ({m['fev']:.2f}) | "
            f"{m['gate']} |"
            for variant, m in counts["models"].items()
        ),
        "",
        gpu_note(),
        "",
        *comparison(rows, args.before),
        f"![where the time goes]({chart.name})",
        "",
    ]
    # Other benchmarks' sections (Celery, DDP) follow OTHER_RESULTS: keep them.
    kept = path.read_text().partition(OTHER_RESULTS) if path.exists() else ("", "", "")
    path.write_text("\n".join(lines) + (f"\n{OTHER_RESULTS}{kept[2]}" if kept[1] else ""))
    print(f"wrote {path} and {chart}")


def gpu_note() -> str:
    import torch

    if torch.cuda.is_available():
        return (
            "A GPU is present: `bash benchmarks/gpu.sh` trains each model with the default "
            "schedule on 9,000 galaxies on it (\"GPU training\" below)."
        )
    return (
        "No GPU on this machine, so this run trained on its CPUs; `bash benchmarks/gpu.sh` on an "
        "NVIDIA machine trains each model with the default schedule on 9,000 galaxies (\"GPU "
        "training\" below)."
    )


def comparison(rows: list[Stage], before_path: Path | None) -> list[str]:
    """A before/after table against the stages.json of an earlier run (``--before``)."""
    if before_path is None:
        return []
    saved = json.loads(before_path.read_text())
    before = {row.name: row for row in grouped([Stage(**stage) for stage in saved["stages"]])}
    lines = [
        f"Against an earlier run (`{saved.get('label', before_path.name)}`):",
        "",
        "| stage | runs before / after | wall before (s) | wall after (s) "
        "| Dagster before (s) | Dagster after (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        old = before.get(row.name)
        if old is None:
            continue
        lines.append(
            f"| {row.name} | {old.runs} / {row.runs} | {old.wall_s:.1f} | {row.wall_s:.1f} | "
            f"{old.overhead_s:.1f} | {row.overhead_s:.1f} |"
        )
    return [*lines, ""]


def main() -> None:
    from manga_assets.defs.constants import PLATES_PER_RUN

    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        report, log, separator, *command = sys.argv[2:]
        assert separator == "--"
        sys.exit(measure_child(Path(report), command, Path(log)))

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / "survey", help="release and run")
    parser.add_argument("--plates", type=int, help="only the first N plates (a quick look)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--default-schedule",
        action="store_true",
        help="train with the model assets' defaults (epochs, early stopping, gate)",
    )
    parser.add_argument(
        "--batch-plates", type=int, default=PLATES_PER_RUN, help="plates per range run"
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--min-fev", type=float, default=-10.0, help="models' gate bar")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--before", type=Path, help="stages.json of an earlier run to compare")
    args = parser.parse_args()
    bench, counts = run_survey(args)
    json.dump(
        {"counts": counts, "stages": [stage.__dict__ for stage in bench.stages]},
        (args.dir / "run" / "stages.json").open("w"),
        indent=1,
    )
    write_results(bench, counts, args, args.results)


if __name__ == "__main__":
    main()
