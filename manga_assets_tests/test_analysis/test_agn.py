import logging

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from manga_assets.analysis.agn import build_agn_sample, read_agn_catalog
from manga_assets.dap.datamodel import MNGTARG3_AGN_BITS

BPT_ROWS = pd.DataFrame(
    {
        "plateifu": ["8485-1901", "8485-1902", "8486-3701", "8486-3702", "8487-12701"],
        "bpt_class": ["seyfert", "sf", "liner", "sf", "composite"],
    }
)
CATALOG = pd.DataFrame(
    {
        # 8487-12701 is missing from the catalogue: it counts as not targeted.
        "plateifu": ["8485-1901", "8485-1902", "8486-3701", "8486-3702"],
        "mngtarg3": [
            0,
            1 << MNGTARG3_AGN_BITS["AGN_WISE"],
            1 << MNGTARG3_AGN_BITS["AGN_BAT"],
            # Bit 5 is not an AGN programme.
            1 << 5,
        ],
    }
)
# Listed in the user catalogue besides galaxies of the sample.
NOT_IN_SAMPLE = "9999-1901"
NOT_A_PLATEIFU = "../../etc/passwd"


def expected_sources(with_catalogue: bool) -> dict[str, str]:
    return {
        "8485-1901": "bpt",
        "8485-1902": "mngtarg3",
        "8486-3701": "bpt+mngtarg3" + ("+catalog" if with_catalogue else ""),
        "8486-3702": "",
        "8487-12701": "catalog" if with_catalogue else "",
    }


def check_sample(sample: pd.DataFrame, with_catalogue: bool) -> None:
    assert list(sample.columns) == ["plateifu", "bpt_class", "is_agn", "agn_source"]
    assert list(sample["plateifu"]) == list(BPT_ROWS["plateifu"])
    assert list(sample["bpt_class"]) == list(BPT_ROWS["bpt_class"])
    sources = dict(zip(sample["plateifu"], sample["agn_source"], strict=True))
    assert sources == expected_sources(with_catalogue)
    assert (sample["is_agn"] == (sample["agn_source"] != "")).all()
    assert sample["is_agn"].dtype == bool


def test_sources_without_catalogue():
    sample, unknown = build_agn_sample(BPT_ROWS, CATALOG, None)
    check_sample(sample, with_catalogue=False)
    assert unknown == []


def test_csv_catalogue_marks_members_and_reports_unknown(tmp_path, caplog):
    path = tmp_path / "agn.csv"
    pd.DataFrame(
        {"PlateIFU": ["8486-3701", " 8487-12701 ", NOT_IN_SAMPLE, NOT_A_PLATEIFU], "z": 0.03}
    ).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="manga_assets.analysis.agn"):
        sample, unknown = build_agn_sample(BPT_ROWS, CATALOG, path)
    check_sample(sample, with_catalogue=True)
    assert unknown == [NOT_IN_SAMPLE, NOT_A_PLATEIFU]
    assert "2 entries skipped" in caplog.text


def test_fits_catalogue_marks_members_and_reports_unknown(tmp_path):
    path = tmp_path / "agn.fits"
    Table({"PLATEIFU": ["8486-3701", "8487-12701", NOT_IN_SAMPLE], "Z": [0.1, 0.2, 0.3]}).write(
        path, format="fits"
    )
    sample, unknown = build_agn_sample(BPT_ROWS, CATALOG, path)
    check_sample(sample, with_catalogue=True)
    assert unknown == [NOT_IN_SAMPLE]
    assert read_agn_catalog(path) == ["8486-3701", "8487-12701", NOT_IN_SAMPLE]


def test_missing_mngtarg3_counts_as_not_targeted():
    catalog = CATALOG.assign(mngtarg3=[np.nan, np.nan, np.nan, np.nan])
    sample, _ = build_agn_sample(BPT_ROWS, catalog, None)
    assert list(sample.loc[sample["is_agn"], "agn_source"]) == ["bpt", "bpt"]


def test_catalogue_without_plateifu_column_raises(tmp_path):
    path = tmp_path / "agn.csv"
    pd.DataFrame({"name": ["x"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="no 'plateifu' column"):
        build_agn_sample(BPT_ROWS, CATALOG, path)


def test_catalogue_of_unknown_format_raises(tmp_path):
    path = tmp_path / "agn.txt"
    path.write_text("8485-1901\n")
    with pytest.raises(ValueError, match="neither CSV"):
        build_agn_sample(BPT_ROWS, CATALOG, path)


def test_missing_catalogue_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_agn_sample(BPT_ROWS, CATALOG, tmp_path / "absent.csv")


def test_unknown_bpt_class_raises():
    rows = BPT_ROWS.assign(bpt_class=["seyfert", "sf", "LINER", "sf", "comp"])
    with pytest.raises(ValueError, match="unknown BPT classes"):
        build_agn_sample(rows, CATALOG, None)


def test_catalog_without_mngtarg3_raises():
    with pytest.raises(ValueError, match="'mngtarg3'"):
        build_agn_sample(BPT_ROWS, CATALOG.drop(columns="mngtarg3"), None)


def test_calibration_classes_are_the_agn_samples_measured_classes_or_none_by_depth():
    from manga_assets.analysis.agn import calibration_classes

    sample = pd.DataFrame({"plateifu": ["1-1", "1-2"], "bpt_class": ["liner", "sf"]})
    assert calibration_classes("bpt_class", ["1-2", "1-1", "1-3"], sample) == [
        "sf",
        "liner",
        "unclassified",
    ]
    assert calibration_classes("depth", ["1-2"], sample) is None
    with pytest.raises(ValueError, match="calibrate_by must be one of"):
        calibration_classes("mass", ["1-2"], sample)
