"""The acquisition assets, run through Dagster against a synthetic release on 127.0.0.1."""

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance

from manga_assets.cubes.cube_file import read_cube
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.defs.runner import run_pipeline
from manga_assets.mirror.server import read_access_log
from manga_assets.sas.paths import PlateIFU


def acquire(settings, instance=None, **options):
    """Catalogue, MAPS files and cubes through Dagster (the acquisition slice of ``run``)."""
    instance = instance or DagsterInstance.ephemeral()
    return run_pipeline(
        settings, instance=instance, log=lambda message: None, acquisition_only=True, **options
    )


def maps_gets(log_path):
    return [e for e in read_access_log(log_path) if "-MAPS-" in e.path and e.method == "GET"]


def faults_by_kind(release):
    return {kind: plateifu for plateifu, kind in release.faults}


def test_run_downloads_extracts_and_explains_every_failure(dr17_release, settings, tmp_path):
    instance = DagsterInstance.ephemeral()
    summary = acquire(settings, instance)

    products = settings.data_dir / "products"
    catalog = pd.read_parquet(products / "catalog.parquet")
    truth = pd.read_parquet(dr17_release.truth_path)
    assert summary.galaxies == len(catalog) > 0
    assert set(catalog["plateifu"]) <= set(truth["plateifu"])

    manifest = pd.concat(pd.read_parquet(p) for p in (products / "manifest").glob("*.parquet"))
    features = pd.concat(pd.read_parquet(p) for p in (products / "features").glob("*.parquet"))
    status = dict(zip(manifest["plateifu"], manifest["status"], strict=True))
    faults = faults_by_kind(dr17_release)
    assert status[faults["missing_file"]] == "missing"
    assert status[faults["truncated_gzip"]] == "corrupt"
    feature_rows = features.set_index("plateifu")
    assert feature_rows.at[faults["no_gflux_hdu"], "status"] == "invalid"
    assert "EMLINE_GFLUX" in feature_rows.at[faults["no_gflux_hdu"], "reason"]
    assert feature_rows.at[faults["all_donotuse"], "n_valid_pixels"] == 0

    good = features[(features["status"] == "ok") & (features["n_valid_pixels"] > 0)]
    assert len(good) >= len(catalog) - 4
    for plateifu in good["plateifu"]:
        cube = read_cube(settings.data_dir / "products" / "cubes" / plateifu.split("-")[0]
                         / f"{plateifu}.npz")  # fmt: skip
        assert cube.flux.shape == (19, 32, 32) and cube.lines == PROJECT_LINES
        assert np.isfinite(cube.flux).all() and (cube.flux[cube.mask] == 0).all()

    # The materialisations are recorded in the instance, with the plates as partitions.
    assert sorted(instance.get_dynamic_partitions("plates")) == sorted(summary.plates)
    assert sorted(instance.get_materialized_partitions(
        __import__("dagster").AssetKey("line_cubes"))) == sorted(summary.plates)  # fmt: skip


def test_a_second_run_downloads_and_extracts_nothing(dr17_release, settings, tmp_path):
    instance = DagsterInstance.ephemeral()
    first = acquire(settings, instance)
    fetched_first = len(maps_gets(tmp_path / "access.log"))

    second = acquire(settings, instance)
    fetched_second = len(maps_gets(tmp_path / "access.log"))
    third = acquire(settings, instance, revalidate_after_hours=0)

    assert first.downloaded > 0 and first.extracted > 0
    assert second.downloaded == 0 and second.extracted == 0 and second.checked_plates == []
    assert fetched_second == fetched_first, "files checked within the window are not asked about"
    assert third.downloaded == 0 and third.extracted == 0 and third.checked_plates == first.plates
    third_gets = maps_gets(tmp_path / "access.log")[fetched_second:]
    assert third_gets, "with no window, the run asks the server whether files changed"
    assert {entry.status for entry in third_gets} <= {304, 404, 200}
    refetched = {entry.path for entry in third_gets if entry.status == 200}
    corrupt = faults_by_kind(dr17_release)["truncated_gzip"]
    assert all(f"manga-{corrupt}-MAPS" in path for path in refetched), refetched


def test_ratio_of_a_tied_doublet_survives_into_the_cube(settings):
    """[NII]6549 is fixed at 0.34 x [NII]6585 in DR17 files: the cube keeps the ratio."""
    acquire(settings)
    features = pd.concat(
        pd.read_parquet(p) for p in (settings.data_dir / "products" / "features").glob("*.parquet")
    )
    weak, strong = PROJECT_LINES.index("NII-6549"), PROJECT_LINES.index("NII-6585")
    ratios = []
    for plateifu in features[features["status"] == "ok"]["plateifu"]:
        cube = read_cube(settings.data_dir / "products" / "cubes" / plateifu.split("-")[0]
                         / f"{plateifu}.npz")  # fmt: skip
        both = ~cube.mask[weak] & ~cube.mask[strong] & (cube.flux[strong] != 0)
        ratios.append(cube.flux[weak][both] / cube.flux[strong][both])
    ratios = np.concatenate(ratios)
    assert len(ratios) > 1000
    # A cell where one line has a flagged spaxel that the other has not averages over different
    # spaxels (each line keeps all its valid data), so a handful of cells differ slightly.
    assert np.median(ratios) == pytest.approx(0.34, rel=1e-6)
    assert np.mean(np.abs(ratios / 0.34 - 1) < 1e-5) > 0.99


def test_an_unreachable_server_fails_the_run_with_what_to_check(settings, monkeypatch):
    from dataclasses import replace

    from manga_assets.sas.transfer import Downloader

    # The downloader's waits between attempts are test_transfer's; here only the message counts.
    monkeypatch.setattr(Downloader, "_backoff_delay", lambda self, number, retry_after: 0.0)
    dead = replace(settings, sas_url="http://127.0.0.1:9/sas")
    with pytest.raises(RuntimeError, match="MANGA_SAS_URL=http://127.0.0.1:9/sas"):
        acquire(dead)


def test_plate_ifus_in_products_are_valid(settings):
    acquire(settings)
    catalog = pd.read_parquet(settings.data_dir / "products" / "catalog.parquet")
    for text in catalog["plateifu"]:
        assert str(PlateIFU.parse(text)) == text


def test_any_directory_in_the_sas_layout_works(tmp_path):
    """A tree written without the synthetic writer: a line set to 0.25 x Ha keeps that ratio."""
    from astropy.io import fits
    from astropy.table import Table

    from manga_assets.mirror.server import MirrorServer
    from manga_assets.sas.paths import dapall_location, drpall_location, maps_location
    from manga_assets.sas.releases import get_release
    from manga_assets.settings import Settings
    from manga_assets_tests.fits_builders import line_values, write_maps

    release, root = get_release("DR17"), tmp_path / "tree"
    plateifus = [PlateIFU(8485, 1901), PlateIFU(8485, 1902), PlateIFU(7443, 12701)]
    for plateifu in plateifus:
        values = line_values("3.1.0", (34, 34))
        values["SII-6718"] = 0.25 * values["Ha-6564"]
        path = root / maps_location(release, plateifu)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_maps(path, shape=(34, 34), values=values)
    n = len(plateifus)
    drpall = Table({
        "plateifu": [str(p) for p in plateifus], "mangaid": [f"1-{i}" for i in range(n)],
        "plate": [p.plate for p in plateifus], "ifudsgn": [str(p.ifu) for p in plateifus],
        "objra": [1.0] * n, "objdec": [2.0] * n, "z": [0.03] * n, "ebvgal": [0.01] * n,
        "drp3qual": [0] * n, "mngtarg1": [0] * n, "mngtarg3": [0] * n,
        "ifudesignsize": [p.ifu_size for p in plateifus],
    })  # fmt: skip
    dapall = Table({
        "PLATEIFU": [str(p) for p in plateifus], "DAPTYPE": [release.daptype] * n,
        "DAPDONE": [True] * n, "DAPQUAL": [0] * n,
    })  # fmt: skip
    for table, location, name in (
        (drpall, drpall_location(release), "MANGA"),
        (dapall, dapall_location(release), release.daptype),
    ):
        hdu = fits.table_to_hdu(table)
        hdu.name = name
        (root / location).parent.mkdir(parents=True, exist_ok=True)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(root / location)

    with MirrorServer(root) as server:
        settings = Settings(sas_url=server.url, release="DR17", data_dir=tmp_path / "data")
        summary = acquire(settings)

    assert summary.cubes == 3 and sorted(summary.plates) == ["7443", "8485"]
    sii, ha = PROJECT_LINES.index("SII-6718"), PROJECT_LINES.index("Ha-6564")
    for plateifu in plateifus:
        cube = read_cube(settings.data_dir / "products" / "cubes" / str(plateifu.plate)
                         / f"{plateifu}.npz")  # fmt: skip
        np.testing.assert_allclose(cube.flux[sii] / cube.flux[ha], 0.25, rtol=1e-6)


def test_a_dr15_release_runs_with_its_own_layout(tmp_path):
    from manga_assets.mirror.server import MirrorServer
    from manga_assets.settings import Settings
    from manga_assets_tests.conftest import build_small_release

    release = build_small_release(tmp_path / "dr15", release="DR15", n_plates=1)
    with MirrorServer(release.root) as server:
        settings = Settings(sas_url=server.url, release="DR15", data_dir=tmp_path / "data")
        summary = acquire(settings)

    assert summary.cubes >= 3 and summary.failed.empty
    plateifu = pd.read_parquet(settings.data_dir / "products" / "catalog.parquet")["plateifu"][0]
    assert "/dr15/manga/spectro/analysis/v2_4_3/2.2.1/HYB10-GAU-MILESHC/" in str(
        next((settings.data_dir / "sas").rglob(f"manga-{plateifu}-MAPS-*.fits.gz"))
    )


def test_new_extraction_code_re_extracts_from_the_mirror_without_downloading(
    dr17_release, settings, tmp_path, monkeypatch
):
    from dagster import AssetKey

    from manga_assets.cubes import extract
    from manga_assets.defs.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    first = acquire(settings, instance)
    released_version = extract.EXTRACTION_VERSION
    monkeypatch.setattr(extract, "EXTRACTION_VERSION", released_version + 1)
    gets_before = len(maps_gets(tmp_path / "access.log"))

    second = acquire(settings, instance)

    assert second.changed_plates == first.plates
    assert second.extracted == first.cubes and second.downloaded == 0
    new_gets = maps_gets(tmp_path / "access.log")[gets_before:]
    corrupt = faults_by_kind(dr17_release)["truncated_gzip"]
    assert all(e.status in (304, 404) or f"manga-{corrupt}-" in e.path for e in new_gets)
    # The asset's code version names the extraction version, so Dagster marks cubes stale.
    graph = build_definitions(settings).resolve_asset_graph()
    assert graph.get(AssetKey("line_cubes")).code_version == f"extraction-{released_version}"


def test_a_failed_download_is_reported_without_the_password_in_its_url(tmp_path):
    import dagster as dg

    from manga_assets.defs.assets.acquisition import _fail_if_unreachable
    from manga_assets.defs.resources import SasResource
    from manga_assets.sas.transfer import DownloadResult

    url = "http://user:hunter2-secret@[::1]:8080/sas/dr17/x.fits.gz"
    failed = DownloadResult(url, tmp_path / "x", "error", "refused", 0, None, fetched=False)
    sas = SasResource(sas_url="http://[::1]:8080/sas", release="DR17")
    with pytest.raises(dg.Failure) as raised:
        _fail_if_unreachable([failed], sas)
    assert "hunter2-secret" not in raised.value.description
    assert "http://[::1]:8080/sas/dr17/x.fits.gz" in raised.value.description
