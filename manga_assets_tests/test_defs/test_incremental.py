"""Incremental rebuilds end to end, no mocks: a plate is added, then a galaxy is reprocessed.

A synthetic release of 4 plates is served on 127.0.0.1 with an access log and the whole graph is
run. A fifth plate is added to the served release: only its MAPS files are fetched, the models
are not retrained, and its galaxies reach the latents, scores, neighbours and the AGN sample.
Then the served MAPS file of one old galaxy changes: only that file is fetched again and only its
plate is extracted and embedded again.
"""

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance

from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import MirrorServer, read_access_log
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release, rewrite_galaxy

# Growth of a fifth plate (~30%) stays below the retraining threshold on purpose.
# What is tested here is what gets fetched, embedded and retrained, not the models' quality: a
# short training keeps the module quick.
TRAINING = {
    "epochs": 4, "batch_size": 8, "learning_rate": 3e-3, "patience": 10,
    "growth_to_retrain": 0.5,
}  # fmt: skip


def maps_requests(log_path, since: int, until: int | None = None):
    entries = read_access_log(log_path)[since:until]
    return [e for e in entries if e.method == "GET" and "-MAPS-" in e.path]


@pytest.fixture(scope="module")
def incremental(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    spec = SyntheticReleaseSpec(n_plates=4, galaxies_per_plate=9, seed=0, lean=True)
    release = build_release(root / "release", spec)
    log_path = root / "access.log"
    instance = DagsterInstance.ephemeral()
    steps = {}
    with MirrorServer(release.root, access_log=log_path) as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=root / "data")

        def run(**options):
            return run_pipeline(
                settings, training=TRAINING, instance=instance, log=lambda message: None, **options
            )

        steps["first"] = (run(), len(read_access_log(log_path)))
        spec5 = SyntheticReleaseSpec(n_plates=5, galaxies_per_plate=9, seed=0, lean=True)
        release5 = build_release(root / "release", spec5)
        steps["added"] = (run(), len(read_access_log(log_path)))
        catalog = pd.read_parquet(settings.data_dir / "products" / "catalog.parquet")
        changed_galaxy = catalog.loc[catalog["plate"] == release.plates[1], "plateifu"].iloc[1]
        rewrite_galaxy(root / "release", spec5, changed_galaxy)
        # Within the revalidation window a run would not ask; 0 asks about every file.
        steps["changed"] = (run(revalidate_after_hours=0), len(read_access_log(log_path)))
        unchanged = run()
        steps["unchanged"] = (unchanged, len(read_access_log(log_path)))
        steps["unchanged_materialised"] = {
            record.dagster_event.asset_key.to_user_string()
            for run_id in unchanged.run_ids
            for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        }

        spec6 = SyntheticReleaseSpec(n_plates=6, galaxies_per_plate=9, seed=0, lean=True)
        build_release(root / "release", spec6)
        steps["ticked"] = (
            tick_schedule_and_sensor(settings, instance),
            len(read_access_log(log_path)),
        )
    return settings, release, release5, changed_galaxy, steps, log_path


def tick_schedule_and_sensor(settings, instance):
    """What the daemon does: the daily schedule's run, then the new-plates sensor's runs."""
    from dagster import build_schedule_context, build_sensor_context

    from manga_assets.defs.definitions import build_definitions
    from manga_assets.defs.jobs import catalog_schedule
    from manga_assets.defs.resources import DataDirResource
    from manga_assets.defs.sensors import new_plates_sensor

    defs = build_definitions(settings)
    runs = []
    schedule_tick = catalog_schedule.evaluate_tick(build_schedule_context(instance))
    assert len(schedule_tick.run_requests) == 1
    runs.append(defs.resolve_job_def("catalog_job").execute_in_process(instance=instance))
    with build_sensor_context(
        instance=instance, resources={"data_dir": DataDirResource(data_dir=str(settings.data_dir))}
    ) as context:
        result = new_plates_sensor(context)
    for partitions in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(partitions.partitions_def_name, partitions.partition_keys)
    for request in result.run_requests:
        runs.append(
            defs.resolve_job_def("plates_job").execute_in_process(
                instance=instance, tags=request.tags
            )
        )
    return result, runs


def test_a_new_plate_is_fetched_embedded_and_analysed_without_retraining(incremental):
    settings, release, release5, _, steps, log_path = incremental
    first, after_first = steps["first"]
    added, after_added = steps["added"]
    new_plate = str(max(release5.plates))

    assert first.retrained == {"ae": True, "vae": True}
    assert added.retrained == {"ae": False, "vae": False}

    requests = maps_requests(log_path, after_first, after_added)
    fetched = {e.path for e in requests if e.status == 200}
    assert fetched and all(f"/{new_plate}/" in path for path in fetched)
    old = [e for e in requests if f"/{new_plate}/" not in e.path]
    assert not old, "old plates were checked within the revalidation window: no request"
    assert added.checked_plates == [new_plate]

    assert added.changed_plates == [new_plate] and added.embedded_plates == [new_plate]
    products = settings.data_dir / "products"
    new_galaxies = set(
        pd.read_parquet(products / "features" / f"{new_plate}.parquet").query("status == 'ok'")[
            "plateifu"
        ]
    )
    assert new_galaxies
    for variant in ("ae", "vae"):
        for name in ("latents", "anomaly_scores", "umap"):
            table = pd.read_parquet(products / variant / f"{name}.parquet")
            assert new_galaxies <= set(table["plateifu"]), (variant, name)
        neighbours = pd.read_parquet(products / variant / "neighbours.parquet")
        assert new_galaxies <= set(neighbours["plateifu"])
    assert new_galaxies <= set(pd.read_parquet(products / "agn_sample.parquet")["plateifu"])
    assert added.report is not None and added.report.exists()


def test_a_changed_maps_file_is_fetched_again_and_only_its_plate_rebuilt(incremental):
    settings, _, _, changed_galaxy, steps, log_path = incremental
    _, after_added = steps["added"]
    changed, after_changed = steps["changed"]
    plate = changed_galaxy.split("-")[0]

    requests = maps_requests(log_path, after_added, after_changed)
    fetched = [e.path for e in requests if e.status == 200]
    assert len(fetched) == 1 and f"manga-{changed_galaxy}-MAPS" in fetched[0]
    others = [e for e in requests if e.status != 200]
    assert others and all(e.status == 304 for e in others), "the rest are only revalidated"
    assert changed.checked_plates == changed.plates
    assert changed.changed_plates == [plate] and changed.embedded_plates == [plate]
    assert changed.retrained == {"ae": False, "vae": False}
    assert changed.downloaded == 1 and changed.extracted == 1

    features = pd.read_parquet(settings.data_dir / "products" / "features" / f"{plate}.parquet")
    extracted_again = features.loc[~features["reused"].astype(bool), "plateifu"].tolist()
    assert extracted_again == [changed_galaxy]


def test_a_run_with_nothing_new_asks_only_for_the_catalogue_and_rebuilds_nothing(incremental):
    _, _, _, _, steps, log_path = incremental
    changed, after_changed = steps["changed"]
    unchanged, after_unchanged = steps["unchanged"]

    requests = read_access_log(log_path)[after_changed:after_unchanged]
    assert requests and not [e for e in requests if "-MAPS-" in e.path]
    assert unchanged.checked_plates == [] and unchanged.changed_plates == []
    assert unchanged.embedded_plates == [] and unchanged.retrained == {"ae": False, "vae": False}
    assert unchanged.report == changed.report
    # The catalogue is re-read and the models decide to keep themselves; nothing else runs.
    assert steps["unchanged_materialised"] == {"catalog", "ae/model", "vae/model"}


def test_ticking_the_schedule_and_sensor_embeds_a_new_plate_with_the_current_models(incremental):
    from dagster import AssetKey

    settings, _, _, _, steps, log_path = incremental
    _, after_changed = steps["changed"]
    (result, runs), _ = steps["ticked"]
    new_plate = "10006"

    assert [r.tags for r in result.run_requests] == [
        {"dagster/asset_partition_range_start": new_plate,
         "dagster/asset_partition_range_end": new_plate}
    ]  # fmt: skip
    assert all(run.success for run in runs)
    fetched = {e.path for e in maps_requests(log_path, after_changed) if e.status == 200}
    assert fetched and all(f"/{new_plate}/" in path for path in fetched)
    products = settings.data_dir / "products"
    for variant in ("ae", "vae"):
        assert (products / variant / "latents" / f"{new_plate}.parquet").exists()
    models = {AssetKey(["ae", "model"]), AssetKey(["vae", "model"])}
    latents = {AssetKey(["ae", "latents"]), AssetKey(["vae", "latents"])}
    for run in runs:
        assert not {e.asset_key for e in run.get_asset_materialization_events()} & models
    assert latents <= {e.asset_key for e in runs[-1].get_asset_materialization_events()}
