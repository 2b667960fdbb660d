"""Incremental rebuilds end to end, no mocks: a plate is added, then a galaxy is reprocessed.

A synthetic release of 4 plates is served on 127.0.0.1 with an access log and the whole graph is
run. A fifth plate is added to the served release: only its MAPS files are fetched, the models
are not retrained, and its galaxies reach the latents, scores, neighbours and the AGN sample.
Then the served MAPS file of one old galaxy changes: only that file is fetched again and only its
plate is extracted and embedded again.
"""

import pandas as pd
import pytest
from dagster import DagsterInstance

from manga_assets.defs.runner import run_pipeline
from manga_assets.sas.mirror import MirrorServer, read_access_log
from manga_assets.settings import Settings
from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release, rewrite_galaxy

# Growth of a fifth plate (~30%) stays below the retraining threshold on purpose.
TRAINING = {
    "epochs": 40, "batch_size": 8, "learning_rate": 3e-3, "patience": 10,
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

        def run():
            return run_pipeline(
                settings, training=TRAINING, instance=instance, log=lambda message: None
            )

        steps["first"] = (run(), len(read_access_log(log_path)))
        spec5 = SyntheticReleaseSpec(n_plates=5, galaxies_per_plate=9, seed=0, lean=True)
        release5 = build_release(root / "release", spec5)
        steps["added"] = (run(), len(read_access_log(log_path)))
        catalog = pd.read_parquet(settings.data_dir / "products" / "catalog.parquet")
        changed_galaxy = catalog.loc[catalog["plate"] == release.plates[1], "plateifu"].iloc[1]
        rewrite_galaxy(root / "release", spec5, changed_galaxy)
        steps["changed"] = (run(), len(read_access_log(log_path)))
    return settings, release, release5, changed_galaxy, steps, log_path


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
    assert old and all(e.status == 304 for e in old), "old files are only revalidated"

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
    changed, _ = steps["changed"]
    plate = changed_galaxy.split("-")[0]

    fetched = [e.path for e in maps_requests(log_path, after_added) if e.status == 200]
    assert len(fetched) == 1 and f"manga-{changed_galaxy}-MAPS" in fetched[0]
    assert changed.changed_plates == [plate] and changed.embedded_plates == [plate]
    assert changed.retrained == {"ae": False, "vae": False}
    assert changed.downloaded == 1 and changed.extracted == 1

    features = pd.read_parquet(settings.data_dir / "products" / "features" / f"{plate}.parquet")
    extracted_again = features.loc[~features["reused"].astype(bool), "plateifu"].tolist()
    assert extracted_again == [changed_galaxy]
