import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from manga_assets.defs.definitions import build_definitions
from manga_assets.defs.io_managers import PRODUCT_PATH, write_parquet
from manga_assets.defs.sensors import RANGE_END, RANGE_START, new_plates_sensor
from manga_assets.layout import product_path
from manga_assets.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"


def test_code_location_validates_from_the_command_line(tmp_path):
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path),
             "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_code_location_imports_no_torch_or_umap():
    # Celery and the Kubernetes client belong to the deployments' code locations alone.
    heavy = ("torch", "umap", "numba", "dagster_celery", "celery", "dagster_k8s", "kubernetes")
    code = (
        f"import sys, manga_assets.definitions; HEAVY = {heavy!r}; "
        "print(sorted(m for m in HEAVY if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stderr


def test_assets_and_plate_partitions_are_defined(tmp_path):
    defs = build_definitions(Settings(data_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"catalog", "maps_files", "line_cubes"} <= keys
    cubes = graph.get(dg.AssetKey("line_cubes"))
    assert cubes.partitions_def.name == "plates"
    assert dg.AssetKey("maps_files") in cubes.parent_keys


def test_every_product_lives_where_staleness_reads_it(tmp_path):
    """Each asset's PRODUCT_PATH metadata is the path layout.product_path gives staleness."""
    defs = build_definitions(Settings(data_dir=tmp_path))
    paths = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        for key, metadata in assets_def.metadata_by_key.items():
            if PRODUCT_PATH in metadata:
                template = metadata[PRODUCT_PATH]
                paths[key.to_user_string()] = getattr(template, "value", template)
    assert {"line_cubes", "ae/latents", "vae/latent_table", "agn_sample"} <= set(paths)
    assert paths == {name: product_path(name) for name in paths}


def _evaluate_new_plates_sensor(instance, tmp_path):
    from manga_assets.defs.resources import DataDirResource

    # A context manager, as the daemon uses it: DataDirResource has a lifecycle (the step lock).
    with dg.build_sensor_context(
        instance=instance, resources={"data_dir": DataDirResource(data_dir=str(tmp_path))}
    ) as context:
        return new_plates_sensor(context)


def test_sensor_adds_new_plates_and_requests_batched_runs(tmp_path):
    plates = list(range(10001, 10001 + 520))
    write_parquet(pd.DataFrame({"plate": plates}), tmp_path / "products" / "catalog.parquet")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("plates", ["10001"])

    result = _evaluate_new_plates_sensor(instance, tmp_path)

    (request,) = result.dynamic_partitions_requests
    assert request.partition_keys == [str(p) for p in plates[1:]]
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests] == [
        ("10002", "10251"), ("10252", "10501"), ("10502", "10520"),
    ]  # fmt: skip


def test_sensor_skips_when_nothing_is_new(tmp_path):
    write_parquet(pd.DataFrame({"plate": [10001]}), tmp_path / "products" / "catalog.parquet")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("plates", ["10001"])
    result = _evaluate_new_plates_sensor(instance, tmp_path)
    assert isinstance(result, dg.SkipReason)
    assert "partitions already" in result.skip_message


def test_a_watched_release_is_reported_once_when_it_appears(tmp_path):
    from manga_assets.defs.resources import SasResource
    from manga_assets.defs.sensors import release_watch_sensor
    from manga_assets.mirror.server import MirrorServer

    (tmp_path / "dr19" / "manga" / "spectro").mkdir(parents=True)
    with MirrorServer(tmp_path) as server:
        sas = SasResource(sas_url=server.url, release="DR17", watch_releases=["DR18", "DR19"])
        context = dg.build_sensor_context(resources={"sas": sas})
        result = release_watch_sensor(context)
        (event,) = result.asset_events
        assert event.metadata["release_appeared"].value == "DR19"
        assert result.cursor == '["DR19"]'

        again = release_watch_sensor(
            dg.build_sensor_context(resources={"sas": sas}, cursor=result.cursor)
        )
        assert isinstance(again, dg.SkipReason) and "DR18" in again.skip_message


def test_stage_jobs_cover_every_asset_once_in_dependency_order(tmp_path):
    defs = build_definitions(Settings(data_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    stages = ["catalog_job", "acquisition_job", "models_job", "latents_job", "analyses_job"]
    # Observed, not built: the reviewers' labels.
    observed = {key for key in graph.get_all_asset_keys() if graph.get(key).is_observable}
    built: set[dg.AssetKey] = set()
    for name in stages:
        selected = set(defs.resolve_job_def(name).asset_layer.executable_asset_keys)
        assert not selected & built, f"{name} rebuilds {selected & built}"
        for key in selected:
            missing = set(graph.get(key).parent_keys) - built - selected - observed
            assert not missing, f"{name}: {key.to_user_string()} needs {missing} first"
        built |= selected
    assert observed == {dg.AssetKey("labels")}
    assert built == set(graph.get_all_asset_keys()) - observed


def test_steps_fork_from_a_preloaded_server_and_concurrency_stays_settable(tmp_path):
    from manga_assets.defs.definitions import step_executor

    job = build_definitions(Settings(data_dir=tmp_path)).resolve_job_def("acquisition_job")
    assert job.executor_def is step_executor
    resolved = step_executor.config_schema.resolve_config({"config": {"max_concurrent": 3}})
    assert resolved.success, resolved.errors
    assert resolved.value["config"]["max_concurrent"] == 3
    assert resolved.value["config"]["start_method"] == {
        "forkserver": {"preload_modules": ["manga_assets.definitions"]}
    }
