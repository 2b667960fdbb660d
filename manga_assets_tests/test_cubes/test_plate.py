"""Which plates must be extracted again, decided from the products alone."""

import pandas as pd
import pytest

from manga_assets.cubes.plate import stale_plates
from manga_assets.layout import DataLayout
from manga_assets.sas.paths import PlateIFU

KEY = "settings-1"


@pytest.fixture
def products(tmp_path):
    """Two plates: 10001 with two extracted galaxies, 10002 with one failed download."""
    layout = DataLayout(tmp_path)
    manifests = {
        "10001": pd.DataFrame(
            {"plateifu": ["10001-1901", "10001-1902"], "status": ["ok", "ok"],
             "sha256": ["a" * 64, "b" * 64]}
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


def test_new_extraction_settings_make_every_plate_stale(products):
    layout, manifests, features = products
    assert stale_plates(manifests, features, layout, "settings-2") == {"10001", "10002"}


def test_a_missing_cube_or_features_table_makes_its_plate_stale(products):
    layout, manifests, features = products
    layout.cube(PlateIFU.parse("10001-1902")).unlink()
    features["10002"] = None
    assert stale_plates(manifests, features, layout, KEY) == {"10001", "10002"}


def test_a_galaxy_added_to_the_manifest_makes_its_plate_stale(products):
    layout, manifests, features = products
    extra = pd.DataFrame({"plateifu": ["10002-1902"], "status": ["ok"], "sha256": ["d" * 64]})
    manifests["10002"] = pd.concat([manifests["10002"], extra], ignore_index=True)
    assert stale_plates(manifests, features, layout, KEY) == {"10002"}
