"""The ``manga-assets`` command.

manga-assets run [--release DR17] [--sas-url URL] [--data-dir DIR] [--limit N] [--plates P ...]
                 [--epochs N] [--max-steps N] [--min-fev F] [--revalidate-after H] [--strict]
                 [--acquisition-only] [--wait]
manga-assets demo [--dir DIR] [--plates N] [--galaxies-per-plate N] [--seed S] [--epochs N]
                  [--world realistic|smooth] [--lean] [--hostile] [--release DR17]
                  [--faults] (the demo always plants broken files; the flag changes nothing)
manga-assets mirror build DIR [--release DR17] [--plates N] [--galaxies-per-plate N] [--seed S]
                              [--lean] [--faults] [--hostile] [--survey]
                              [--world realistic|smooth] [--inject MAPS ...]
manga-assets mirror serve DIR [--port P] [--user USER]
manga-assets neighbours PLATEIFU [--model ae|vae] [-k N] [--data-dir DIR]
manga-assets explore [--data-dir DIR] [--port 8080] [--host 127.0.0.1] [--reviewer NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from manga_assets.settings import REVALIDATE_AFTER_HOURS, Settings

MIRROR_PASSWORD_ENV = "MANGA_MIRROR_PASSWORD"


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "release", None):
        settings = replace(settings, release=args.release.upper())
    if getattr(args, "sas_url", None):
        settings = replace(settings, sas_url=args.sas_url)
    if getattr(args, "data_dir", None):
        settings = replace(settings, data_dir=Path(args.data_dir).resolve())
    return settings


def _print_summary(summary) -> None:
    print(
        f"\n{summary.galaxies} galaxies on {len(summary.plates)} plates: "
        f"{summary.downloaded} MAPS files downloaded, {summary.cubes} cubes "
        f"({summary.extracted} extracted in this run)"
    )
    if len(summary.failed):
        print(f"{len(summary.failed)} galaxies without a cube:")
        for row in summary.failed.itertuples(index=False):
            print(f"  {row.plateifu}: {row.status}: {row.reason}")
    if summary.unusable_plates:
        print(
            f"{len(summary.unusable_plates)} plates without any cube (see their manifests): "
            + ", ".join(summary.unusable_plates)
        )
    print(f"products: {summary.products}")
    print(f"  catalogue  {summary.products / 'catalog.parquet'}")
    print(f"  manifests  {summary.products / 'manifest'}/<plate>.parquet")
    print(f"  cubes      {summary.products / 'cubes'}/<plate>/<plateifu>.npz")
    print(f"  features   {summary.products / 'features'}/<plate>.parquet")
    if summary.report:
        print(f"  models     {summary.products / 'models'}/{{ae,vae}}/")
        print(f"  latents    {summary.products}/{{ae,vae}}/latents.parquet (and umap, ")
        print("             anomaly_scores, neighbours)")
        print(f"  AGN        {summary.products / 'agn_sample.parquet'}")
        print(f"\nreport: {summary.report}")
    if summary.evaluation:
        print("evaluation against the synthetic truth table (a measurement, never a gate):")
        figures = summary.evaluation
        for name, value in sorted(figures.items()):
            if name.endswith(("_auc_low", "_auc_high")):
                continue
            interval = ""
            if f"{name}_low" in figures:
                low, high = figures[f"{name}_low"], figures[f"{name}_high"]
                interval = f"  95% interval [{low:.3f}, {high:.3f}]"
            print(f"  {name:<32} {value:.3f}{interval}")


def _training_overrides(args: argparse.Namespace) -> dict | None:
    """The models' settings `manga-assets run` was given (None: the defaults)."""
    overrides = {}
    if args.min_fev is not None:
        overrides["min_fev"] = args.min_fev
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps or None
    return overrides or None


def command_run(args: argparse.Namespace) -> int:
    from manga_assets.defs.runner import run_pipeline

    settings = _settings(args)
    try:
        summary = run_pipeline(
            settings,
            plates=args.plates,
            limit=args.limit,
            epochs=args.epochs,
            training=_training_overrides(args),
            revalidate_after_hours=args.revalidate_after,
            wait=args.wait,
            acquisition_only=args.acquisition_only,
        )
    except RuntimeError as error:
        print(f"manga-assets run failed: {error}", file=sys.stderr)
        return 1
    _print_summary(summary)
    # Failed galaxies are data (listed above); CI users ask for them to fail the command.
    if args.strict and len(summary.failed):
        print(
            f"manga-assets run --strict: {len(summary.failed)} galaxies have no cube",
            file=sys.stderr,
        )
        return 1
    return 0


def build_release_with_bar(directory: Path, spec, description: str = "writing synthetic release"):
    """``build_release`` with a tqdm bar over the galaxies written."""
    from tqdm import tqdm

    from manga_assets.synthetic.release import build_release

    with tqdm(desc=description, unit="galaxy") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return build_release(directory, spec, progress=progress)


def _build_mirror(directory: Path, args: argparse.Namespace):
    from manga_assets.synthetic.release import SyntheticReleaseSpec
    from manga_assets.synthetic.spec import DR17_SURVEY

    if getattr(args, "survey", False):
        spec = replace(DR17_SURVEY, seed=args.seed, world=args.world)
    else:
        spec = SyntheticReleaseSpec(
            release=args.release.upper(),
            n_plates=args.plates,
            galaxies_per_plate=args.galaxies_per_plate,
            seed=args.seed,
            lean=args.lean,
            faults=args.faults,
            hostile=getattr(args, "hostile", False),
            world=args.world,
        )
    return build_release_with_bar(directory, spec)


def command_mirror_build(args: argparse.Namespace) -> int:
    from manga_assets.synthetic.inject import inject_maps

    summary = _build_mirror(Path(args.dir), args)
    print(f"{summary.n_galaxies} galaxies on {len(summary.plates)} plates written to {args.dir}")
    for maps_file in args.inject:
        try:
            plateifu = inject_maps(args.dir, summary.release, maps_file)
        except (OSError, ValueError) as error:
            print(f"mirror build --inject: {error}", file=sys.stderr)
            return 2
        print(f"{maps_file} added unchanged as {plateifu}, with its DRPall and DAPall rows")
    return 0


def command_mirror_serve(args: argparse.Namespace) -> int:
    from manga_assets.mirror.server import serve_forever

    credentials = None
    if args.user:
        password = os.environ.get(MIRROR_PASSWORD_ENV)
        if not password:
            print(
                f"mirror serve --user {args.user}: set {MIRROR_PASSWORD_ENV} to the password "
                "(it is read from the environment so it never shows in the process list)",
                file=sys.stderr,
            )
            return 2
        credentials = (args.user, password)
    serve_forever(
        Path(args.dir),
        port=args.port,
        credentials=credentials,
        on_ready=lambda url: print(f"serving {args.dir} at {url}", flush=True),
    )
    return 0


# A demo release has a few dozen galaxies: small batches give the optimiser enough steps per
# epoch to beat the mean-map baseline in about a minute per model on 2 CPU cores, which keeps the
# whole demo under 5 minutes.
DEMO_TRAINING = {"epochs": 30, "batch_size": 8, "learning_rate": 3e-3, "patience": 10}


def command_demo(args: argparse.Namespace) -> int:
    from manga_assets.defs.runner import run_pipeline
    from manga_assets.mirror.server import MirrorServer

    directory = Path(args.dir).resolve()
    mirror_dir = directory / "mirror"
    if not (mirror_dir / "truth.parquet").exists():
        _build_mirror(mirror_dir, args)
    settings = replace(_settings(args), data_dir=directory / "data", release=args.release.upper())
    with MirrorServer(mirror_dir) as server:
        print(f"serving the synthetic {settings.release} release at {server.url}")
        settings = replace(settings, sas_url=server.url)
        try:
            summary = run_pipeline(
                settings,
                epochs=args.epochs,
                training=DEMO_TRAINING,
                truth_table=mirror_dir / "truth.parquet",
            )
        except RuntimeError as error:
            print(f"demo failed: {error}", file=sys.stderr)
            return 1
    _print_summary(summary)
    print(f"synthetic truth table: {mirror_dir / 'truth.parquet'}")
    print(f"explore and label the galaxies: manga-assets explore --data-dir {settings.data_dir}")
    return 0


def command_neighbours(args: argparse.Namespace) -> int:
    from manga_assets.analysis.neighbours import UnknownPlateIFUError, neighbours_of
    from manga_assets.layout import DataLayout

    path = DataLayout(_settings(args).data_dir).product(f"{args.model}/neighbours.parquet")
    if not path.exists():
        print(f"no neighbour table at {path}: run `manga-assets run` first", file=sys.stderr)
        return 1
    try:
        table = neighbours_of(path, args.plateifu, args.k)
    except (UnknownPlateIFUError, ValueError) as error:
        print(f"manga-assets neighbours: {error}", file=sys.stderr)
        return 2
    print(f"nearest neighbours of {args.plateifu} in the {args.model} latent space:")
    for row in table.itertuples(index=False):
        print(
            f"  {row.neighbour_rank:3d}  {row.neighbour_plateifu:<12} distance {row.distance:.4f}"
        )
    return 0


def command_explore(args: argparse.Namespace) -> int:
    from manga_assets.explorer.products import NoProductsError
    from manga_assets.explorer.server import make_server

    data_dir = _settings(args).data_dir
    try:
        server = make_server(data_dir, host=args.host, port=args.port, reviewer=args.reviewer)
    except NoProductsError as error:
        print(f"manga-assets explore: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"manga-assets explore: cannot listen on {args.host}:{args.port} ({error}); "
            "choose another --port",
            file=sys.stderr,
        )
        return 1
    host, port = server.server_address[:2]
    print(
        f"exploring {data_dir} at http://{host}:{port}/ as reviewer "
        f"{server.explorer.reviewer!r} (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _add_release_options(parser: argparse.ArgumentParser, plates: int = 4) -> None:
    parser.add_argument("--release", default=os.environ.get("MANGA_RELEASE", "DR17"))
    parser.add_argument("--plates", type=int, default=plates, help="plates to write")
    parser.add_argument("--galaxies-per-plate", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lean", action="store_true", help="write only the HDUs the pipeline reads"
    )
    parser.add_argument("--faults", action="store_true", help="plant broken files")
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="plant hostile files too (header bomb, no END card, gzip bomb, huge NAXIS)",
    )
    parser.add_argument(
        "--world",
        choices=("realistic", "smooth"),
        default="realistic",
        help="realistic: clumpy disks with diffuse gas, a bright tail and rare odd galaxies "
        "(default); smooth: the earlier smooth disks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manga-assets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialise the whole graph against MANGA_SAS_URL")
    run.add_argument("--release", help="MaNGA release (default MANGA_RELEASE or DR17)")
    run.add_argument("--sas-url", help="SAS root (default MANGA_SAS_URL)")
    run.add_argument("--data-dir", help="data directory (default MANGA_DATA_DIR or ./data)")
    run.add_argument("--limit", type=int, help="at most N galaxies")
    run.add_argument("--plates", type=int, nargs="+", help="only these plates")
    run.add_argument(
        "--epochs", type=int,
        help="training epochs per model (at most: a large release stops at --max-steps)",
    )  # fmt: skip
    run.add_argument(
        "--max-steps", type=int,
        help="most optimisation steps per model: a large release trains as many whole epochs "
        "as reach them (default 1500; 0: every epoch)",
    )  # fmt: skip
    run.add_argument(
        "--min-fev",
        type=float,
        help="bar of the models' quality gate: the share of the mean map's chi-square excess "
        "over the noise that a model must remove in the typical validation galaxy (median over "
        "galaxies), lower end of its 95%% interval (default 0.5)",
    )
    run.add_argument(
        "--revalidate-after",
        type=float,
        default=REVALIDATE_AFTER_HOURS,
        metavar="HOURS",
        help="check a plate's MAPS files against the server again only after this long "
        f"(default {REVALIDATE_AFTER_HOURS:g}; 0: every run)",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit non-zero when any galaxy has no cube (default: only when none has one, or a "
        "blocking check failed)",
    )
    run.add_argument(
        "--acquisition-only",
        action="store_true",
        help="download the MAPS files and extract the cubes, then stop (no training set, models "
        "or analyses)",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="wait for a run already working on the data directory instead of refusing",
    )
    run.set_defaults(handler=command_run)

    demo = commands.add_parser("demo", help="build, serve and run a synthetic release")
    demo.add_argument("--dir", default="demo", help="where the release and products go")
    # Six plates (~50 galaxies, ~7 in validation) keep the model check and the evaluation
    # figures stable while the whole demo stays under two minutes on a laptop CPU.
    _add_release_options(demo, plates=6)
    demo.add_argument("--epochs", type=int, help="training epochs per model")
    demo.set_defaults(handler=command_demo, faults=True)

    mirror = commands.add_parser("mirror", help="synthetic releases and their loopback server")
    mirror_commands = mirror.add_subparsers(dest="mirror_command", required=True)
    build = mirror_commands.add_parser("build", help="write a synthetic release into DIR")
    build.add_argument("dir")
    _add_release_options(build)
    build.add_argument(
        "--survey",
        action="store_true",
        help="a lean DR17-sized release: 11,273 cubes on 664 plates (overrides the size options)",
    )
    build.add_argument(
        "--inject",
        type=Path,
        action="append",
        default=[],
        metavar="MAPS",
        help="also serve this MAPS file written by the DAP (of the release's DAPTYPE), unchanged, "
        "with its catalogue rows; repeatable",
    )
    build.set_defaults(handler=command_mirror_build)
    serve = mirror_commands.add_parser("serve", help="serve DIR on 127.0.0.1 as a SAS")
    serve.add_argument("dir")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument(
        "--user",
        help="require HTTP Basic authentication as USER, with the password in "
        f"${MIRROR_PASSWORD_ENV}",
    )
    serve.set_defaults(handler=command_mirror_serve)
    near = commands.add_parser("neighbours", help="latent nearest neighbours of a galaxy")
    near.add_argument("plateifu")
    near.add_argument("--model", choices=("ae", "vae"), default="vae")
    near.add_argument("-k", type=int, default=10)
    near.add_argument("--data-dir", help="data directory (default MANGA_DATA_DIR or ./data)")
    near.set_defaults(handler=command_neighbours)
    explore = commands.add_parser(
        "explore", help="a local web application to look at galaxies and label them"
    )
    explore.add_argument("--data-dir", help="data directory (default MANGA_DATA_DIR or ./data)")
    explore.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any)")
    explore.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only)",
    )
    explore.add_argument(
        "--reviewer", help="the name labels are stored under (default $MANGA_REVIEWER or the user)"
    )
    explore.set_defaults(handler=command_explore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
