"""The acquisition assets, run through Dagster against a synthetic release on 127.0.0.1."""

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance

from manga_assets.cubes.extract import read_cube
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.defs.runner import run_pipeline
from manga_assets.sas.mirror import read_access_log
from manga_assets.sas.paths import PlateIFU


def maps_gets(log_path):
    return [e for e in read_access_log(log_path) if "-MAPS-" in e.path and e.method == "GET"]


def faults_by_kind(release):
    return {kind: plateifu for plateifu, kind in release.faults}


def test_run_downloads_extracts_and_explains_every_failure(dr17_release, settings, tmp_path):
    instance = DagsterInstance.ephemeral()
    summary = run_pipeline(settings, instance=instance, log=lambda message: None)

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


def test_a_second_run_downloads_and_extracts_nothing(settings, tmp_path):
    instance = DagsterInstance.ephemeral()
    first = run_pipeline(settings, instance=instance, log=lambda message: None)
    fetched_first = len(maps_gets(tmp_path / "access.log"))

    second = run_pipeline(settings, instance=instance, log=lambda message: None)

    assert first.downloaded > 0 and first.extracted > 0
    assert second.downloaded == 0 and second.extracted == 0
    second_gets = maps_gets(tmp_path / "access.log")[fetched_first:]
    assert second_gets, "the second run still asks the server whether files changed"
    assert {entry.status for entry in second_gets} <= {304, 404, 200}
    assert sum(entry.status == 200 for entry in second_gets) <= 1  # only the corrupt file again


def test_ratio_of_a_tied_doublet_survives_into_the_cube(settings):
    """[NII]6549 is fixed at 0.34 x [NII]6585 in DR17 files: the cube keeps the ratio."""
    run_pipeline(settings, instance=DagsterInstance.ephemeral(), log=lambda message: None)
    features = pd.concat(
        pd.read_parquet(p) for p in (settings.data_dir / "products" / "features").glob("*.parquet")
    )
    weak, strong = PROJECT_LINES.index("NII-6549"), PROJECT_LINES.index("NII-6585")
    checked = 0
    for plateifu in features[features["status"] == "ok"]["plateifu"]:
        cube = read_cube(settings.data_dir / "products" / "cubes" / plateifu.split("-")[0]
                         / f"{plateifu}.npz")  # fmt: skip
        both = ~cube.mask[weak] & ~cube.mask[strong] & (cube.flux[strong] != 0)
        if both.any():
            np.testing.assert_allclose(
                cube.flux[weak][both] / cube.flux[strong][both], 0.34, rtol=1e-4
            )
            checked += 1
    assert checked > 3


def test_an_unreachable_server_fails_the_run_with_what_to_check(settings):
    from dataclasses import replace

    dead = replace(settings, sas_url="http://127.0.0.1:9/sas")
    with pytest.raises(RuntimeError, match="MANGA_SAS_URL=http://127.0.0.1:9/sas"):
        run_pipeline(dead, instance=DagsterInstance.ephemeral(), log=lambda message: None)


def test_plate_ifus_in_products_are_valid(settings):
    run_pipeline(settings, instance=DagsterInstance.ephemeral(), log=lambda message: None)
    catalog = pd.read_parquet(settings.data_dir / "products" / "catalog.parquet")
    for text in catalog["plateifu"]:
        assert str(PlateIFU.parse(text)) == text
