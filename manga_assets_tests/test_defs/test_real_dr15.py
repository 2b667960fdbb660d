"""A DR15 release laid out as DAP 2.2.1 writes it, with a real DAP MAPS file among its galaxies.

The synthetic DR15 release has its DRPall table unnamed in HDU 1 and one DAPALL table; the real
file (DR15 layout, VERSDAP 2.2.3dev) is copied in unchanged with its catalogue rows. The whole
graph runs on it through Dagster, as ``MANGA_RELEASE=DR15 manga-assets run`` does.
"""

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import MirrorServer
from manga_assets.settings import Settings
from manga_assets.synthetic.inject import inject_maps
from manga_assets_tests.conftest import build_small_release
from manga_assets_tests.real_data import REAL_MAPS, REAL_PLATEIFU, requires_real_maps

pytestmark = [requires_real_maps, pytest.mark.slow]

# The smallest run that reaches every product: the models are not judged here, so one epoch and
# a bar the tiny release always passes.
TRAINING = {"epochs": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def dr15_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_dr15")
    release = build_small_release(
        root / "release", release="DR15", n_plates=1, galaxies_per_plate=3
    )
    assert inject_maps(release.root, "DR15", REAL_MAPS).plate == 7815
    instance = DagsterInstance.ephemeral()
    with MirrorServer(release.root) as server:
        settings = Settings(sas_url=server.url, release="DR15", data_dir=root / "data")
        summary = run_pipeline(settings, training=TRAINING, instance=instance, log=lambda m: None)
    return settings.data_dir / "products", summary, instance


def test_the_real_galaxy_is_selected_and_recorded_with_its_dap_version(dr15_run):
    products, _, _ = dr15_run
    catalog = pd.read_parquet(products / "catalog.parquet")
    assert REAL_PLATEIFU in set(catalog["plateifu"]) and catalog["plate"].nunique() == 2
    manifest = pd.read_parquet(products / "manifest" / "7815.parquet").set_index("plateifu")
    assert manifest.at[REAL_PLATEIFU, "status"] == "ok"
    assert manifest.at[REAL_PLATEIFU, "versdap"] == "2.2.3dev"
    synthetic = pd.concat(pd.read_parquet(p) for p in (products / "manifest").glob("1*.parquet"))
    assert set(synthetic.loc[synthetic["status"] == "ok", "versdap"]) == {"2.2.1"}


def test_the_real_galaxy_has_a_cube_features_latents_and_a_bpt_class(dr15_run):
    from manga_assets.cubes.cube_file import read_cube

    products, _, _ = dr15_run
    cube = read_cube(products / "cubes" / "7815" / f"{REAL_PLATEIFU}.npz")
    assert cube.lines == PROJECT_LINES and cube.flux.shape == (19, 32, 32)
    assert (~cube.mask[PROJECT_LINES.index("Ha-6564")]).sum() > 400

    features = pd.read_parquet(products / "features" / "7815.parquet").set_index("plateifu")
    row = features.loc[REAL_PLATEIFU]
    assert (row["status"], row["versdap"]) == ("ok", "2.2.3dev")
    assert row["redshift"] == pytest.approx(0.02938, abs=1e-5)

    for variant in ("ae", "vae"):
        latents = pd.read_parquet(products / variant / "latents.parquet")
        assert REAL_PLATEIFU in set(latents["plateifu"])
    agn = pd.read_parquet(products / "agn_sample.parquet").set_index("plateifu")
    # Its central line ratios put it below Kauffmann et al. (2003): star forming.
    assert agn.at[REAL_PLATEIFU, "bpt_class"] == "sf"


def test_the_run_names_the_other_dap_version_it_read(dr15_run):
    _, _, instance = dr15_run
    records = instance.fetch_materializations(AssetKey("line_cubes"), limit=5).records
    versions = [r.asset_materialization.metadata["dap_versions_in_run"].value for r in records]
    assert versions and all(counts.get("2.2.3dev") == 1 for counts in versions)


def test_the_explorer_shows_the_real_galaxy_through_the_published_model(dr15_run):
    """The explorer's page of the real galaxy: its JSON, and every image of it, reconstruction
    and residuals from the published model included, drawn from a file the DAP wrote."""
    import requests

    from manga_assets.explorer.images import KINDS
    from manga_assets_tests.test_explore.conftest import serving

    products, _, _ = dr15_run
    with serving(products.parent) as explorer:
        page = requests.get(
            f"{explorer.url}/api/galaxy/{REAL_PLATEIFU}", params={"model": "ae"}, timeout=60
        )
        assert page.status_code == 200, page.text
        galaxy = page.json()
        assert galaxy["plateifu"] == REAL_PLATEIFU and set(galaxy["images"]) == set(KINDS)
        for kind, url in galaxy["images"].items():
            image = requests.get(explorer.url + url, timeout=120)
            assert image.status_code == 200, (kind, image.text[:300])
            assert image.content.startswith(b"\x89PNG"), kind
