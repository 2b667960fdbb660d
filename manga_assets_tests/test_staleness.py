"""What a run must make again, and why, decided from product directories built on disk."""

import json
import os

import pandas as pd
import pytest

from manga_assets.defs.io_managers import write_parquet
from manga_assets.layout import TRAINING_SET_DIR, DataLayout, product_path
from manga_assets.provenance import (
    LATENTS_CODE_VERSION,
    TRAINING_SET_CODE_VERSION,
    cube_digests,
    embeddable,
    latents_file_provenance,
    set_digest,
    training_set_provenance,
)
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.sidecar import part_path, record_path
from manga_assets.staleness import (
    FEATURES_READ,
    Stale,
    describe,
    new_plates,
    plates_to_check,
    published_model_ids,
    read_plate_table,
    stale_features,
    stale_latents,
    stale_training_set,
)

KEY = "settings-1"


def stale_plates(manifests, features, layout, settings_key) -> set[str]:
    return {item.name for item in stale_features(manifests, features, layout, settings_key)}


def reasons(stale: list[Stale]) -> dict[str, str]:
    return {item.name: item.reason for item in stale}


# --- cubes: features made from what the manifest lists -------------------------------------


@pytest.fixture
def products(tmp_path):
    """Two plates: 10001 with two extracted galaxies, 10002 with one failed download."""
    layout = DataLayout(tmp_path)
    manifests = {
        "10001": pd.DataFrame(
            {
                "plateifu": ["10001-1901", "10001-1902"],
                "status": ["ok", "ok"],
                "sha256": ["a" * 64, "b" * 64],
            }
        ),  # fmt: skip
        "10002": pd.DataFrame({"plateifu": ["10002-1901"], "status": ["corrupt"], "sha256": [""]}),
    }
    features = {
        plate: manifest.rename(columns={"sha256": "maps_sha256"}).assign(settings_key=KEY)
        for plate, manifest in manifests.items()
    }
    for plateifu in manifests["10001"]["plateifu"]:
        cube = layout.cube(PlateIFU.parse(plateifu))
        cube.parent.mkdir(parents=True, exist_ok=True)
        cube.write_bytes(b"npz")
    return layout, manifests, features


def test_products_made_from_their_manifests_are_current(products):
    layout, manifests, features = products
    assert stale_plates(manifests, features, layout, KEY) == set()


def test_a_changed_maps_checksum_makes_its_plate_stale(products):
    layout, manifests, features = products
    manifests["10001"].loc[1, "sha256"] = "c" * 64  # downloaded, then the run was killed
    assert stale_plates(manifests, features, layout, KEY) == {"10001"}
    assert reasons(stale_features(manifests, features, layout, KEY)) == {
        "10001": "10001-1902's features were made from another MAPS file than the manifest lists"
    }


def test_new_extraction_settings_make_every_plate_stale(products):
    layout, manifests, features = products
    assert stale_plates(manifests, features, layout, "settings-2") == {"10001", "10002"}
    assert reasons(stale_features(manifests, features, layout, "settings-2"))["10001"] == (
        "10001-1901's cube was extracted with other settings (and 1 more galaxies)"
    )


def test_a_missing_cube_or_features_table_makes_its_plate_stale(products):
    layout, manifests, features = products
    layout.cube(PlateIFU.parse("10001-1902")).unlink()
    features["10002"] = None
    assert stale_plates(manifests, features, layout, KEY) == {"10001", "10002"}
    assert reasons(stale_features(manifests, features, layout, KEY)) == {
        "10001": "10001-1902's cube is missing",
        "10002": "no features yet",
    }


def test_a_galaxy_added_to_the_manifest_makes_its_plate_stale(products):
    layout, manifests, features = products
    extra = pd.DataFrame({"plateifu": ["10002-1902"], "status": ["ok"], "sha256": ["d" * 64]})
    manifests["10002"] = pd.concat([manifests["10002"], extra], ignore_index=True)
    assert stale_plates(manifests, features, layout, KEY) == {"10002"}
    assert reasons(stale_features(manifests, features, layout, KEY)) == {
        "10002": "10002-1902 is in the manifest but has no features row"
    }


def test_a_features_status_that_hides_a_failed_download_makes_its_plate_stale(products):
    layout, manifests, features = products
    features["10002"].loc[0, "status"] = "ok"  # the manifest says the download failed
    assert reasons(stale_features(manifests, features, layout, KEY)) == {
        "10002": "10002-1901's features status does not follow its download status"
    }


# --- MAPS files: which plates are asked about again -----------------------------------------


@pytest.fixture
def mirrored(tmp_path):
    """Plate 10001: two downloaded MAPS files, checked an hour ago, with its manifest on disk
    written after the downloads."""
    layout = DataLayout(tmp_path)
    plateifus = ["10001-1901", "10001-1902"]
    locations = [f"dr17/manga/analysis/10001/manga-{p}-MAPS.fits.gz" for p in plateifus]
    for location in locations:
        path = layout.mirror / location
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"maps")
        record_path(path).write_text("{}")
        os.utime(record_path(path), ns=(10**18, 10**18))
    manifest = pd.DataFrame(
        {
            "plateifu": plateifus,
            "status": ["ok", "ok"],
            "location": locations,
            "checked_at": [pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1)] * 2,
        }
    )
    path = layout.products / product_path("maps_files").format(partition="10001")
    path.parent.mkdir(parents=True)
    manifest.to_parquet(path)
    os.utime(path, ns=(10**18 + 10**9, 10**18 + 10**9))
    return layout, locations


def to_check(layout, galaxies=("10001-1901", "10001-1902"), window_hours=24) -> dict[str, str]:
    manifests = {"10001": read_plate_table(layout, "maps_files", "10001")}
    checked_before = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=window_hours)
    stale = plates_to_check(layout, manifests, {"10001": frozenset(galaxies)}, checked_before)
    return reasons(stale)


def test_a_plate_checked_within_the_window_is_not_asked_about(mirrored):
    layout, _ = mirrored
    assert to_check(layout) == {}


def test_a_plate_checked_before_the_window_is_asked_about_again(mirrored):
    layout, _ = mirrored
    assert to_check(layout, window_hours=0.5)["10001"].startswith("last checked at ")


def test_a_new_plate_or_a_changed_catalogue_plate_is_asked_about(mirrored):
    layout, _ = mirrored
    stale = plates_to_check(
        layout, {"10002": None}, {"10002": frozenset({"10002-1901"})}, pd.Timestamp(0, tz="UTC")
    )
    assert reasons(stale) == {"10002": "new plate: no manifest yet"}
    assert to_check(layout, galaxies=("10001-1901",)) == {
        "10001": "its galaxies in the catalogue changed (0 added, 1 removed)"
    }


def test_a_file_downloaded_after_its_manifest_was_written_asks_again(mirrored):
    layout, locations = mirrored
    os.utime(record_path(layout.mirror / locations[1]), ns=(10**18 + 2 * 10**9,) * 2)
    assert to_check(layout) == {
        "10001": f"{locations[1]} was downloaded after the manifest was written"
    }


def test_a_download_cut_short_asks_again(mirrored):
    layout, locations = mirrored
    part_path(layout.mirror / locations[0]).write_bytes(b"ma")
    assert to_check(layout) == {"10001": f"a download of {locations[0]} was cut short"}


def test_a_lost_download_record_asks_again(mirrored):
    layout, locations = mirrored
    record_path(layout.mirror / locations[0]).unlink()
    assert to_check(layout) == {"10001": f"the mirror has no download record of {locations[0]}"}


def test_new_plates_are_those_of_the_catalogue_not_yet_partitions():
    assert new_plates(["10001", "10002", "10003"], ["10002", "9999"]) == ["10001", "10003"]


# --- the training set, the models' latents --------------------------------------------------


def features_of(plateifus: list[str], sha: str = "a") -> pd.DataFrame:
    """Features rows of usable galaxies, each made from its own MAPS file."""
    return pd.DataFrame(
        {
            "plateifu": plateifus,
            "status": "ok",
            "reason": "",
            "reused": False,
            "maps_sha256": [sha * 60 + p[-4:] for p in plateifus],
            "settings_key": KEY,
            "n_valid_pixels": 100,
        }
    )


@pytest.fixture
def training_set(tmp_path):
    """A training set built from 12 cubes of two plates, recording its inputs."""
    from manga_assets.model.dataset import build_training_set
    from manga_assets_tests.test_model.cubes import write_cubes

    layout = DataLayout(tmp_path / "data")
    cubes = write_cubes(tmp_path / "cubes_src", 12, grid=32, seed=5)
    features = features_of([plateifu for plateifu, _ in cubes])
    config = {"seed": 0, "val_fraction": 0.15}
    build_training_set(
        cubes,
        layout.products / TRAINING_SET_DIR,
        grid=32,
        made_from=training_set_provenance(features, TRAINING_SET_CODE_VERSION, config),
    )
    return layout, features, config


def test_a_training_set_of_the_current_cubes_is_current(training_set):
    layout, features, config = training_set
    assert stale_training_set(layout, features, config) is None


def test_a_training_set_of_other_cubes_or_settings_is_built_again(training_set):
    layout, features, config = training_set
    changed = features.copy()
    changed.loc[3, "maps_sha256"] = "f" * 64
    assert stale_training_set(layout, changed, config) == Stale(
        "training_set", "built from other cubes"
    )
    other = {**config, "seed": 1}
    assert stale_training_set(layout, features, other) == Stale(
        "training_set", "built from other config"
    )


def test_a_truncated_training_set_is_built_again(training_set):
    layout, features, config = training_set
    (layout.products / TRAINING_SET_DIR / "weight.npy").unlink()
    stale = stale_training_set(layout, features, config)
    assert stale.name == "training_set"
    assert stale.reason.startswith("missing or unreadable (training set at ")
    assert "weight.npy" in stale.reason


def publish_model(layout: DataLayout, variant: str, model_id: str) -> None:
    layout.model_dir(variant).mkdir(parents=True, exist_ok=True)
    (layout.model_dir(variant) / "metrics.json").write_text(json.dumps({"model_id": model_id}))


def embed(layout: DataLayout, variant: str, plate: str, features: pd.DataFrame, model_id: str):
    """Write ``plate``'s latents as the latents asset does: rows and the file's provenance."""
    rows = embeddable(features[features["plateifu"].str.startswith(f"{plate}-")])
    table = pd.DataFrame(
        {"plateifu": rows["plateifu"], "model_id": model_id, "cube_digest": cube_digests(rows)}
    )
    provenance = latents_file_provenance(
        LATENTS_CODE_VERSION, model_id, set_digest(rows["plateifu"].tolist(), cube_digests(rows))
    )
    path = layout.products / product_path(f"{variant}/latents").format(partition=plate)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(table, path, provenance)


@pytest.fixture
def embedded(tmp_path):
    """Plates 10001 and 10002 embedded by the published ae and vae models."""
    layout = DataLayout(tmp_path)
    features = features_of(["10001-1901", "10001-1902", "10002-1901"])
    for variant in ("ae", "vae"):
        publish_model(layout, variant, f"{variant}-1")
        for plate in ("10001", "10002"):
            embed(layout, variant, plate, features, f"{variant}-1")
    return layout, features


def stale_embedded(layout, features) -> dict[str, str]:
    model_ids = published_model_ids(layout, ("ae", "vae"))
    return reasons(stale_latents(layout, ["10001", "10002"], features, model_ids))


def test_published_model_ids_are_read_from_the_models_metrics(embedded):
    layout, _ = embedded
    assert published_model_ids(layout, ("ae", "vae", "new")) == {
        "ae": "ae-1", "vae": "vae-1", "new": None,
    }  # fmt: skip


def test_latents_of_the_published_models_and_current_cubes_are_current(embedded):
    assert stale_embedded(*embedded) == {}


def test_a_new_model_makes_every_plate_embed_again(embedded):
    layout, features = embedded
    publish_model(layout, "vae", "vae-2")
    assert stale_embedded(layout, features) == {
        "10001": "vae latents: other model_id",
        "10002": "vae latents: other model_id",
    }


def test_a_changed_cube_or_a_missing_file_embeds_its_plate_only(embedded):
    layout, features = embedded
    changed = features.copy()
    changed.loc[2, "maps_sha256"] = "f" * 64
    assert stale_embedded(layout, changed) == {"10002": "ae latents: other cubes"}
    (layout.products / product_path("vae/latents").format(partition="10001")).unlink()
    assert stale_embedded(layout, features) == {"10001": "vae latents: no record"}


def test_latents_of_older_latents_code_are_made_again(embedded):
    layout, features = embedded
    path = layout.products / product_path("ae/latents").format(partition="10001")
    table = pd.read_parquet(path)
    old = latents_file_provenance(
        "0", "ae-1", set_digest(table["plateifu"].tolist(), table["cube_digest"].tolist())
    )
    write_parquet(table, path, old)
    assert stale_embedded(layout, features) == {"10001": "ae latents: other code_version"}


def test_the_features_columns_read_are_all_that_the_decisions_use(embedded):
    layout, features = embedded
    path = layout.products / product_path("line_cubes").format(partition="10001")
    path.parent.mkdir(parents=True)
    write_parquet(features.assign(flux_ha=1.0, z=0.02), path)
    read = read_plate_table(layout, "line_cubes", "10001", FEATURES_READ)
    assert list(read.columns) == list(FEATURES_READ)
    assert read_plate_table(layout, "line_cubes", "10002", FEATURES_READ) is None


def test_describe_names_the_first_few_with_their_reasons():
    stale = [Stale(str(plate), "new plate") for plate in range(5)]
    assert describe(stale, shown=2) == "0: new plate; 1: new plate; and 3 more"
    assert describe(stale[:1]) == "0: new plate"
