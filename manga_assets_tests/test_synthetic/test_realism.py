"""The realistic world: clumpy HII regions, diffuse gas, a bright tail, rare odd galaxies.

And the smooth world it replaces as the default, kept bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib

import numpy as np
import pytest

from manga_assets.dap.datamodel import EMLINE_CHANNELS, mask_value
from manga_assets.synthetic import SyntheticReleaseSpec, build_release
from manga_assets.synthetic.physics import model_galaxy, observe_lines
from manga_assets.synthetic.population import plan_release
from manga_assets.synthetic.texture import ODDITY_KINDS
from manga_assets_tests.test_synthetic.conftest import (
    LEAN_DR17,
    healthy_plateifus,
    read_lines,
    read_truth,
)

# A few hundred galaxies' parameters (cheap: no maps) for population statistics.
LARGE = SyntheticReleaseSpec(n_plates=40, galaxies_per_plate=17, lean=True)
# Decompressed MAPS files of a small smooth-world release, as written before the realistic
# world existed (sha256); the smooth world must keep writing exactly these.
SMOOTH_GOLDEN_SPEC = SyntheticReleaseSpec(
    n_plates=1, galaxies_per_plate=4, n_cubes=4, ifu_mix=((19, 2), (37, 3)), lean=True, seed=5,
    world="smooth",
)  # fmt: skip
SMOOTH_GOLDEN_SHA256 = {
    "10001-1901": "ad55d2949da20ac461302159e1c6aa67b8aabfa823a225ef02db3aba2c7dc4a6",
    "10001-3701": "b3736c653ac8ed933f9d7f36af11fb307117b7a482da03702a0f3b6ca12f045e",
    "10001-3702": "6543bc1704d5c28af1d0e0d1a9ea4cf0657a7891280700453e3a700d1c2f812a",
    "10001-3703": "9257ad5992509bfe40d4209b9a89bc64155d77ef3cb0f337bc663cbf2ea30a5c",
}


def _ordinary_star_forming(spec: SyntheticReleaseSpec) -> list:
    return [
        g
        for g in plan_release(spec)
        if g.bpt_class == "sf" and g.anomaly_kind == "none" and g.oddity is None
    ]


def _clumpy_power(image: np.ndarray, radius: np.ndarray, footprint: np.ndarray) -> float:
    """Share of a map's power off its radial profile (median in in-plane annuli of 0.5")."""
    ring = np.floor(radius / 0.5).astype(int)
    profile = np.zeros_like(image)
    for index in np.unique(ring[footprint]):
        members = footprint & (ring == index)
        profile[members] = np.median(image[members])
    return float(np.sum((image - profile)[footprint] ** 2) / np.sum(image[footprint] ** 2))


def test_the_default_world_is_realistic_and_an_unknown_one_is_refused():
    assert SyntheticReleaseSpec().world == "realistic"
    with pytest.raises(ValueError, match="unknown world 'lumpy'"):
        SyntheticReleaseSpec(world="lumpy")


def test_the_smooth_world_writes_the_files_it_always_wrote(tmp_path):
    summary = build_release(tmp_path, SMOOTH_GOLDEN_SPEC)
    written = {
        plateifu: hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
        for plateifu, path in summary.maps_paths.items()
        if path.exists()
    }
    assert written == SMOOTH_GOLDEN_SHA256
    truth = read_truth(summary)
    assert (truth["world"] == "smooth").all() and (truth["oddity"] == "none").all()
    assert summary.world == "smooth" and summary.oddities == []


def test_the_realistic_world_draws_on_top_of_the_smooth_one():
    """Same classes, anomalies, geometry and redshifts: only texture, brightness, oddities."""
    smooth = plan_release(dataclasses.replace(LEAN_DR17, world="smooth"))
    realistic = plan_release(LEAN_DR17)
    assert [g.plateifu for g in smooth] == [g.plateifu for g in realistic]
    for before, after in zip(smooth, realistic, strict=True):
        assert (before.bpt_class, before.anomaly_kind, before.z, before.re_arcsec) == (
            after.bpt_class, after.anomaly_kind, after.z, after.re_arcsec
        )  # fmt: skip
        assert before.texture is None and before.world == "smooth"
        assert after.world == "realistic"
        assert (after.texture is not None) == after.disk.star_forming


def test_realistic_halpha_is_clumpy_where_the_smooth_world_is_not():
    realistic = _ordinary_star_forming(LEAN_DR17)
    smooth = {
        g.plateifu: g
        for g in _ordinary_star_forming(dataclasses.replace(LEAN_DR17, world="smooth"))
    }
    ratios = []
    for galaxy in realistic:
        if galaxy.plateifu not in smooth:
            continue
        realistic_model, smooth_model = model_galaxy(galaxy), model_galaxy(smooth[galaxy.plateifu])
        radius, footprint = realistic_model.coords.radius, realistic_model.grid.footprint
        clumpy = _clumpy_power(realistic_model.lines["Ha-6564"], radius, footprint)
        plain = _clumpy_power(smooth_model.lines["Ha-6564"], radius, footprint)
        ratios.append(clumpy / plain)
    assert len(ratios) >= 8
    assert np.median(ratios) > 10


def test_hii_complexes_follow_a_steep_luminosity_function_and_the_disk():
    textures = [g.texture for g in _ordinary_star_forming(LARGE)]
    assert all(-2.0 <= t.alpha <= -1.7 for t in textures)
    assert all(t.n_clumps >= 12 for t in textures)
    assert {t.n_arms for t in textures} == {2, 3, 4}


def _log_ratio(lines: dict, names: tuple[str, ...], where: np.ndarray) -> float:
    return float(
        np.log10(sum(lines[n][where].sum() for n in names) / lines["Ha-6564"][where].sum())
    )


def test_diffuse_gas_has_higher_low_ionisation_ratios_than_the_hii_regions():
    """At the same radius, the faintest spaxels (DIG-dominated) have higher [NII], [SII], [OI]."""
    numerators = {"nii": ("NII-6585",), "sii": ("SII-6718", "SII-6732"), "oi": ("OI-6302",)}
    differences = collections.defaultdict(list)
    for galaxy in _ordinary_star_forming(LEAN_DR17):
        model = model_galaxy(galaxy)
        radius_re = model.coords.radius / galaxy.re_arcsec
        ha = model.lines["Ha-6564"]
        # Annuli 0.1 Re wide, so the metallicity gradient plays no part.
        per_annulus = collections.defaultdict(list)
        for inner in np.arange(0.6, 2.0, 0.1):
            annulus = model.grid.footprint & (radius_re >= inner) & (radius_re < inner + 0.1)
            if annulus.sum() < 12:
                continue
            faint = annulus & (ha <= np.percentile(ha[annulus], 25))
            bright = annulus & (ha >= np.percentile(ha[annulus], 75))
            for name, names in numerators.items():
                per_annulus[name].append(
                    _log_ratio(model.lines, names, faint) - _log_ratio(model.lines, names, bright)
                )
        for name, values in per_annulus.items():
            differences[name].append(float(np.mean(values)))
    assert set(differences) == set(numerators)
    for name, values in differences.items():
        assert len(values) >= 8, name
        assert np.median(values) > 0.03, name
        assert np.mean(np.array(values) > 0) > 0.8, name


def test_a_misaligned_line_is_turned_against_a_realistic_disk():
    params = next(g for g in plan_release(LEAN_DR17) if g.anomaly_kind == "misaligned_line")
    assert params.texture is not None
    line = params.anomaly_line
    turned = model_galaxy(params).lines
    aligned = model_galaxy(dataclasses.replace(params, anomaly_kind="none")).lines
    np.testing.assert_array_equal(turned[line], np.rot90(aligned[line]))
    np.testing.assert_array_equal(turned["Ha-6564"], aligned["Ha-6564"])
    footprint = model_galaxy(params).grid.footprint
    assert np.corrcoef(turned[line][footprint], turned["Ha-6564"][footprint])[0, 1] < 0.8
    assert np.corrcoef(aligned[line][footprint], aligned["Ha-6564"][footprint])[0, 1] > 0.95


def test_bright_and_faint_galaxies_both_exist(lean_dr17):
    truth = read_truth(lean_dr17)
    central, median = [], []
    for plateifu in healthy_plateifus(lean_dr17):
        if truth.loc[plateifu, "anomaly_kind"] != "none":
            continue
        channels, flux, ivar, _ = read_lines(lean_dr17.maps_paths[plateifu])
        ha = channels["Ha-6564"]
        snr = flux[ha] * np.sqrt(ivar[ha])
        n = snr.shape[-1] // 2
        central.append(float(np.max(snr[n - 2 : n + 2, n - 2 : n + 2])))
        median.append(float(np.median(snr[ivar[ha] > 0])))
    assert sum(s > 100 for s in central) >= 3  # the bright tail
    assert sum(s < 5 for s in median) >= 5  # and faint galaxies


def test_odd_galaxies_are_rare_normal_and_recorded():
    galaxies = plan_release(LARGE)
    odd = [g for g in galaxies if g.oddity is not None]
    assert 0.01 < len(odd) / len(galaxies) < 0.08
    assert {g.oddity_kind for g in odd} == set(ODDITY_KINDS)
    assert all(g.anomaly_kind == "none" for g in odd)
    assert all(g.axis_ratio < 0.25 for g in odd if g.oddity_kind == "dust_lane")


def test_the_truth_table_records_world_and_oddity(lean_dr17):
    truth = read_truth(lean_dr17)
    assert (truth["world"] == "realistic").all()
    assert set(truth["oddity"]) <= {"none", *ODDITY_KINDS}
    assert sorted(lean_dr17.oddities) == sorted(
        truth.loc[truth["oddity"] != "none", "oddity"].items()
    )
    assert (truth.loc[truth["oddity"] != "none", "anomaly_kind"] == "none").all()


def _one_of_each_oddity() -> dict:
    found = {}
    for galaxy in plan_release(LARGE):
        if galaxy.oddity is not None and galaxy.fault == "none":
            found.setdefault(galaxy.oddity_kind, galaxy)
    assert set(found) == set(ODDITY_KINDS)
    return found


def test_each_oddity_shows_in_the_maps():
    channels = EMLINE_CHANNELS["3.1.0"]
    for kind, galaxy in _one_of_each_oddity().items():
        model = model_galaxy(galaxy)
        lines = observe_lines(galaxy, model, channels, "3.1.0", np.random.default_rng(0))
        footprint = model.grid.footprint
        ha = model.lines["Ha-6564"]
        if kind == "flat_ratios":
            for name in ("NII-6585", "OIII-5008", "Hb-4862", "SII-6718"):
                ratio = model.lines[name][footprint] / ha[footprint]
                np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)
        elif kind == "foreground_star":
            star = model.foreground_star
            assert star is not None and 20 < star.sum() < footprint.sum() / 2
            forestar = mask_value(["FORESTAR", "DONOTUSE"])
            assert ((lines.mask[:, star] & forestar) == forestar).all()
            assert (lines.ivar[:, star] == 0).all()
        else:
            lane = model.fit_failed
            assert lane is not None and lane.sum() > 10
            assert (lines.ivar[:, lane] == 0).all()
            assert model.ebv[lane].min() > model.ebv[footprint & ~lane].mean()


def test_anomalies_stay_planted_on_realistic_disks():
    galaxies = [g for g in plan_release(LARGE) if g.anomaly_kind != "none"]
    assert {g.anomaly_kind for g in galaxies} >= {"sf_ring", "misaligned_line", "double_nucleus"}
    for galaxy in galaxies:
        if galaxy.anomaly_kind != "sf_ring" or galaxy.nuclei:
            continue
        model = model_galaxy(galaxy)
        radius_re = model.coords.radius / galaxy.re_arcsec
        ha, footprint = model.lines["Ha-6564"], model.grid.footprint
        inner = footprint & (radius_re < 0.3)
        ring = footprint & (np.abs(radius_re - galaxy.disk.ring_radius_re) < 0.2)
        if inner.sum() and ring.sum():
            assert ha[ring].mean() > 2 * ha[inner].mean(), galaxy.plateifu


def test_cli_options_pass_the_world_on():
    from manga_assets.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["mirror", "build", "d"]).world == "realistic"
    assert parser.parse_args(["mirror", "build", "d", "--world", "smooth"]).world == "smooth"
    assert parser.parse_args(["demo", "--world", "smooth"]).world == "smooth"
