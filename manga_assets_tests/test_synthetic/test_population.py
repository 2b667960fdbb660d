"""Spec validation, the class and anomaly mix, and the BPT region sampler."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from manga_assets.dap.datamodel import PROJECT_LINES, TIED_FLUX_RATIOS
from manga_assets.synthetic import SyntheticReleaseSpec
from manga_assets.synthetic.bpt import draw_bpt_ratios
from manga_assets.synthetic.extinction import cardelli_k
from manga_assets.synthetic.population import (
    ANOMALY_LINE_CANDIDATES,
    MISALIGNED_LINE_CANDIDATES,
    plan_release,
)
from manga_assets.synthetic.spec import ANOMALY_KINDS
from manga_assets_tests.test_synthetic.test_physics import BPT_LINES, _kewley06_class


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"release": "DR16"}, "unknown release 'DR16'"),
        ({"n_plates": 0}, "n_plates must be at least 1"),
        ({"galaxies_per_plate": 18}, r"galaxies_per_plate must be 1\.\.17"),
        ({"ifu_mix": ((7, 2),)}, "unknown bundle sizes"),
        ({"seed": -1}, "seed must be non-negative"),
        ({"first_plate": 99999, "n_plates": 2}, "plates must have 4-5 digits"),
    ],
)
def test_spec_rejects_impossible_releases(changes, message):
    with pytest.raises(ValueError, match=message):
        SyntheticReleaseSpec(**changes)


@pytest.mark.parametrize("bpt_class", ["sf", "composite", "seyfert", "liner"])
def test_drawn_ratios_stay_in_their_region_with_margin(bpt_class):
    rng = np.random.default_rng(1)
    for _ in range(200):
        r = draw_bpt_ratios(rng, bpt_class)
        for dx, dy in ((0.1, 0.1), (-0.1, -0.1), (0.1, -0.1), (-0.1, 0.1)):
            shifted = (r.nii_ha + dx, r.oiii_hb + dy, r.sii_ha + dx, r.oi_ha + dx)
            assert _kewley06_class(*shifted) == bpt_class, (r, dx, dy)


def test_a_large_release_has_every_class_and_anomaly():
    galaxies = plan_release(SyntheticReleaseSpec(n_plates=60, galaxies_per_plate=17))
    classes = collections.Counter(g.bpt_class for g in galaxies)
    assert set(classes) == {"sf", "composite", "seyfert", "liner", "lineless"}
    assert classes["sf"] > classes["seyfert"] > 0.05 * len(galaxies)
    anomalies = collections.Counter(g.anomaly_kind for g in galaxies)
    assert set(anomalies) == {"none", *ANOMALY_KINDS}
    assert 0.05 < 1 - anomalies["none"] / len(galaxies) < 0.15
    sizes = collections.Counter(g.ifu_size for g in galaxies)
    assert sizes[127] > sizes[91] and sizes[61] > sizes[19]  # the plate bundle mix
    assert len({str(g.plateifu) for g in galaxies}) == len(galaxies)
    assert set(ANOMALY_LINE_CANDIDATES) <= set(PROJECT_LINES)
    assert set(MISALIGNED_LINE_CANDIDATES) <= set(PROJECT_LINES)
    tied = {
        line
        for ties in TIED_FLUX_RATIOS.values()
        for weak, (strong, _) in ties.items()
        for line in (weak, strong)
    }
    assert not set(MISALIGNED_LINE_CANDIDATES) & (tied | set(BPT_LINES))
    misaligned = [g for g in galaxies if g.anomaly_kind == "misaligned_line"]
    assert {g.anomaly_line for g in misaligned} == set(MISALIGNED_LINE_CANDIDATES)


def test_cardelli_curve_reddens_the_blue_more():
    k = cardelli_k([3727.0, 4862.7, 6564.6, 9532.0])
    assert np.all(np.diff(k) < 0)
    assert k[1] - k[2] == pytest.approx(1.07, abs=0.03)  # the Balmer-decrement lever arm


def test_n_cubes_fixes_the_release_size_and_spreads_cubes_evenly():
    spec = SyntheticReleaseSpec(n_plates=3, n_cubes=40, galaxies_per_plate=9)
    galaxies = [g for g in plan_release(spec) if g.catalogue_case != "repeat_observation"]
    per_plate = collections.Counter(g.plateifu.plate for g in galaxies)
    assert len(galaxies) == 40
    assert sorted(per_plate.values(), reverse=True) == [14, 13, 13]


def test_the_dr17_sized_release_has_dr17s_cube_count_and_bundle_mix():
    from manga_assets.synthetic.spec import DR17_SURVEY

    galaxies = plan_release(DR17_SURVEY)
    assert len(galaxies) == 11273
    assert len({g.mangaid for g in galaxies}) == 10010
    sizes = collections.Counter(g.ifu_size for g in galaxies)
    # Every plate carries 2, 4, 4, 2 and 5 bundles of 19, 37, 61, 91 and 127 fibres.
    assert set(sizes) == {19, 37, 61, 91, 127}
    assert sizes[127] > sizes[61] > sizes[91]
    assert DR17_SURVEY.lean


@pytest.mark.parametrize("n_cubes", [2, 3 * 17 + 1])
def test_n_cubes_must_fit_the_plates(n_cubes):
    with pytest.raises(ValueError, match="n_cubes"):
        SyntheticReleaseSpec(n_plates=3, n_cubes=n_cubes)


def test_second_visits_repeat_a_galaxy_of_an_earlier_plate_and_the_selection_keeps_one(tmp_path):
    from manga_assets.dap.catalog import read_dapall, read_drpall, select_cubes
    from manga_assets.sas.releases import get_release
    from manga_assets.synthetic import build_release

    spec = SyntheticReleaseSpec(n_plates=4, galaxies_per_plate=9, n_repeats=5, lean=True)
    galaxies = plan_release(spec)
    first = {g.mangaid: g for g in galaxies if g.catalogue_case == "repeated_target"}
    second = [g for g in galaxies if g.catalogue_case == "repeat_observation"]
    assert len(second) == 6  # five planted, plus the repeated target's own second visit
    for visit in second:
        original = first[visit.mangaid]
        assert original.plateifu.plate < visit.plateifu.plate or visit.mangaid == second[0].mangaid
        assert (visit.bpt_class, visit.z, visit.log_mass) == (
            original.bpt_class, original.z, original.log_mass
        )  # fmt: skip

    summary = build_release(tmp_path, spec)
    release = get_release("DR17")
    selection = select_cubes(
        read_drpall(summary.drpall_path),
        read_dapall(summary.dapall_path, release.daptype),
    )
    selected, rejected = selection.selected, selection.rejected
    assert selected["mangaid"].is_unique
    for visit in second:
        pair = {str(visit.plateifu), str(first[visit.mangaid].plateifu)}
        assert len(pair & set(selected["plateifu"])) == 1, pair
        reason = rejected.set_index("plateifu").loc[
            list(pair - set(selected["plateifu"])), "reason"
        ]
        assert reason.str.startswith("repeat observation").all()


def test_too_many_second_visits_are_refused():
    with pytest.raises(ValueError, match="n_repeats"):
        plan_release(SyntheticReleaseSpec(n_plates=2, galaxies_per_plate=9, n_repeats=50))
