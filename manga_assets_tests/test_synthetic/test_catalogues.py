"""DRPall, DAPall and truth table of a synthetic release, with their planted edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from manga_assets.dap.datamodel import CRITICAL_BIT, EMLINE_CHANNELS
from manga_assets.sas.releases import RELEASE_DAPTYPES, get_release
from manga_assets_tests.test_synthetic.conftest import read_truth

DRPALL_COLUMNS = {
    "plate", "ifudsgn", "plateifu", "mangaid", "objra", "objdec", "ifura", "ifudec", "ebvgal",
    "drp3qual", "mngtarg1", "mngtarg2", "mngtarg3", "ifudesignsize", "nsa_iauname", "z", "nsa_z",
    "nsa_zdist", "nsa_nsaid", "nsa_version", "nsa_elpetro_ba", "nsa_elpetro_phi",
    "nsa_elpetro_th50_r", "nsa_elpetro_mass", "nsa_sersic_n",
}  # fmt: skip
DAPALL_COLUMNS = {
    "PLATE", "IFUDESIGN", "PLATEIFU", "MANGAID", "DRPALLINDX", "MODE", "DAPTYPE", "DAPDONE",
    "OBJRA", "OBJDEC", "Z", "DRP3QUAL", "DAPQUAL", "VERSDRP3", "VERSDAP", "NSA_ELPETRO_TH50_R",
    "HA_GSIGMA_1RE", "EMLINE_GFLUX_1RE", "SFR_1RE",
}  # fmt: skip


@pytest.fixture(params=["DR17", "DR15"])
def release_summary(request, full_dr17, full_dr15):
    return {"DR17": full_dr17, "DR15": full_dr15}[request.param]


def test_drpall_layout_and_rows(release_summary):
    with fits.open(release_summary.drpall_path) as hdus:
        names = [hdu.name for hdu in hdus]
        manga = hdus[1].data
        assert set(DRPALL_COLUMNS) <= set(manga.columns.names)
        if release_summary.release == "DR17":
            assert names == ["PRIMARY", "MANGA", "MASTAR"]
            assert 0 < len(hdus["MASTAR"].data) < 10
        else:
            # As DAP 2.2.1 reads drpall-v2_4_3.fits: one table in HDU 1, by position, unnamed.
            assert names == ["PRIMARY", ""]
        assert list(manga["plateifu"]) == release_summary.plateifus
        assert len(manga) == release_summary.n_galaxies
        assert all(
            f"{p}-{i}" == pi
            for p, i, pi in zip(manga["plate"], manga["ifudsgn"], manga["plateifu"], strict=True)
        )
        assert (manga["ifudesignsize"] == [int(i) // 100 for i in manga["ifudsgn"]]).all()


def test_dapall_layout_per_release(release_summary):
    release = get_release(release_summary.release)
    daptypes = RELEASE_DAPTYPES[release.name]
    n_lines = len(EMLINE_CHANNELS[release.dapver])
    with fits.open(release_summary.dapall_path) as hdus:
        names = [hdu.name for hdu in hdus]
        assert hdus[0].data is None
        if release.dapall_per_daptype:
            assert names == ["PRIMARY", *daptypes]
            tables = {daptype: hdus[daptype].data for daptype in daptypes}
        else:
            assert names == ["PRIMARY", "DAPALL"]
            table = hdus["DAPALL"].data
            assert len(table) == len(daptypes) * release_summary.n_galaxies
            tables = {daptype: table[table["DAPTYPE"] == daptype] for daptype in daptypes}
        for daptype, table in tables.items():
            assert DAPALL_COLUMNS <= set(table.columns.names)
            assert len(table) == release_summary.n_galaxies
            assert set(table["DAPTYPE"]) == {daptype}
            assert set(table["VERSDAP"]) == {release.dapver}
            assert table["EMLINE_GFLUX_1RE"].shape == (release_summary.n_galaxies, n_lines)
            assert list(table["PLATEIFU"]) == release_summary.plateifus
            assert (table["DRPALLINDX"] == np.arange(len(table))).all()


def test_dapall_measurements_are_physical(full_dr17):
    with fits.open(full_dr17.dapall_path) as hdus:
        table = hdus[get_release("DR17").daptype].data
    done = table["DAPDONE"]
    ha = EMLINE_CHANNELS["3.1.0"].index("Ha-6564")
    # The whole map holds at least the flux within 1 Re where there is flux to measure; a lineless
    # galaxy's sums are noise, which, correlated between spaxels as in MaNGA, does not average
    # away over the outer map.
    truth = read_truth(full_dr17)
    emitting = done & (truth.loc[list(table["PLATEIFU"]), "bpt_class"] != "lineless").to_numpy()
    assert emitting.sum() >= 4
    total, within_re = table["EMLINE_GFLUX_TOT"][:, ha], table["EMLINE_GFLUX_1RE"][:, ha]
    assert (total[emitting] >= within_re[emitting]).all()
    assert (table["HA_GSIGMA_1RE"][done] > 0).all()
    assert np.isfinite(table["SFR_1RE"][done]).all()
    assert (table["EMLINE_GFLUX_1RE"][~done] == -999).all()


def test_catalogue_edge_cases_are_planted(release_summary):
    cases = dict(release_summary.catalogue_cases)
    assert sorted(cases.values()) == sorted(
        ["critical_drp3qual", "dap_not_done", "repeated_target", "repeat_observation"]
    )
    by_kind = {kind: plateifu for plateifu, kind in release_summary.catalogue_cases}
    release = get_release(release_summary.release)
    with fits.open(release_summary.drpall_path) as hdus:
        drpall = hdus[1].data
    with fits.open(release_summary.dapall_path) as hdus:
        dapall = hdus[release.daptype if release.dapall_per_daptype else "DAPALL"].data
    dapall = dapall[dapall["DAPTYPE"] == release.daptype]
    row = {p: i for i, p in enumerate(drpall["plateifu"])}

    first, second = by_kind["repeated_target"], by_kind["repeat_observation"]
    assert first != second and drpall["mangaid"][row[first]] == drpall["mangaid"][row[second]]
    ids, counts = np.unique(drpall["mangaid"], return_counts=True)
    assert list(ids[counts > 1]) == [drpall["mangaid"][row[first]]]

    critical = (drpall["drp3qual"] & (1 << CRITICAL_BIT)) > 0
    assert list(drpall["plateifu"][critical]) == [by_kind["critical_drp3qual"]]
    assert list(dapall["PLATEIFU"][~dapall["DAPDONE"].astype(bool)]) == [by_kind["dap_not_done"]]

    # The DAP still ran on the critical and the repeat cubes, but not on the undone one.
    for kind in ("critical_drp3qual", "repeated_target", "repeat_observation"):
        assert release_summary.maps_paths[by_kind[kind]].exists()
    assert by_kind["dap_not_done"] not in release_summary.maps_paths
    assert not list(release_summary.root.rglob(f"manga-{by_kind['dap_not_done']}-MAPS-*"))
    assert release.name == release_summary.release


def test_truth_table_matches_the_summary(release_summary):
    truth = read_truth(release_summary)
    assert list(truth.index) == release_summary.plateifus
    for column in (
        "mangaid", "bpt_class", "is_agn", "anomaly_kind", "fault", "catalogue_case", "z",
        "inclination", "ifu_size", "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha",
    ):  # fmt: skip
        assert column in truth.columns
    assert set(truth["bpt_class"]) <= {"sf", "composite", "seyfert", "liner", "lineless"}
    assert dict(release_summary.faults) == dict(truth.loc[truth["fault"] != "none", "fault"])
    assert dict(release_summary.catalogue_cases) == dict(
        truth.loc[truth["catalogue_case"] != "none", "catalogue_case"]
    )
    assert truth["log_nii_ha"].notna().all()
    assert release_summary.truth_path.parent == release_summary.root
