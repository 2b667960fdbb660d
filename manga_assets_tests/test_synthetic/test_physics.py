"""The synthetic line maps carry the physics the model should learn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from manga_assets.dap.datamodel import EMLINE_CHANNELS, MNGTARG3_AGN_BITS, TIED_FLUX_RATIOS
from manga_assets.sas.releases import get_release
from manga_assets.synthetic.geometry import map_grid
from manga_assets.synthetic.physics import (
    NOISE_CORRELATION_SIGMA,
    correlated_noise,
    model_galaxy,
    observe_lines,
)
from manga_assets.synthetic.population import (
    LINE_NOISE_STREAM,
    MISALIGNED_LINE_CANDIDATES,
    plan_release,
    seeded_rng,
)
from manga_assets_tests.test_synthetic.conftest import (
    LEAN_DR17,
    healthy_plateifus,
    read_lines,
    read_truth,
)

# BPT demarcation lines of the reference (section 2.2), written out here as an independent oracle.
BPT_LINES = ("NII-6585", "Ha-6564", "OIII-5008", "Hb-4862", "SII-6718", "SII-6732", "OI-6302")
# S/N of a central 2x2 sum, its noise counting the spaxels' correlation (which makes it about 1.9x
# that of four independent spaxels, so fewer centres qualify than the fluxes alone suggest).
MIN_SNR = 6.0


def _kewley06_class(x_nii: float, y: float, x_sii: float, x_oi: float) -> str:
    sf_nii = x_nii < 0.05 and y < 0.61 / (x_nii - 0.05) + 1.30
    below_ke01_nii = x_nii < 0.47 and y < 0.61 / (x_nii - 0.47) + 1.19
    sf_sii = x_sii < 0.32 and y < 0.72 / (x_sii - 0.32) + 1.30
    sf_oi = x_oi < -0.59 and y < 0.73 / (x_oi + 0.59) + 1.33
    if sf_nii and sf_sii and sf_oi:
        return "sf"
    if not sf_nii and below_ke01_nii and sf_sii and sf_oi:
        return "composite"
    if not below_ke01_nii and not sf_sii and not sf_oi:
        above_sii, above_oi = y > 1.89 * x_sii + 0.76, y > 1.18 * x_oi + 1.30
        above_nii = y > 1.05 * x_nii + 0.45
        if above_sii and above_oi and above_nii:
            return "seyfert"
        if not above_sii and not above_oi and not above_nii:
            return "liner"
    return "ambiguous"


def _central_fluxes(path) -> tuple[dict[str, float], float]:
    """Line fluxes summed over the central 2x2 spaxels and the lowest S/N among BPT lines.

    The noise of the sum counts the correlation of neighbouring spaxels, which the writer puts in
    as MaNGA has it.
    """
    channels, flux, ivar, _ = read_lines(path)
    centre = flux.shape[-1] // 2
    window = (slice(centre - 1, centre + 1), slice(centre - 1, centre + 1))
    y, x = np.mgrid[0:2, 0:2]
    distance2 = (y.ravel()[:, None] - y.ravel()) ** 2 + (x.ravel()[:, None] - x.ravel()) ** 2
    rho = np.exp(-distance2 / (2 * NOISE_CORRELATION_SIGMA**2))
    fluxes, snr = {}, np.inf
    for line in BPT_LINES:
        values, weights = flux[channels[line]][window], ivar[channels[line]][window]
        if (weights == 0).any():
            return {}, 0.0
        fluxes[line] = float(values.sum())
        noise = 1.0 / np.sqrt(weights.ravel().astype(np.float64))
        snr = min(snr, fluxes[line] / float(np.sqrt(noise @ rho @ noise)))
    return fluxes, snr


def _ratios(f: dict[str, float]) -> tuple[float, float, float, float]:
    return (
        np.log10(f["NII-6585"] / f["Ha-6564"]),
        np.log10(f["OIII-5008"] / f["Hb-4862"]),
        np.log10((f["SII-6718"] + f["SII-6732"]) / f["Ha-6564"]),
        np.log10(f["OI-6302"] / f["Ha-6564"]),
    )


def test_planted_centre_ratios_lie_in_their_class_region(lean_dr17):
    truth = read_truth(lean_dr17)
    classes = truth[truth["bpt_class"].isin(["sf", "composite", "seyfert", "liner"])]
    for plateifu, row in classes.iterrows():
        ratios = (row.log_nii_ha, row.log_oiii_hb, row.log_sii_ha, row.log_oi_ha)
        assert _kewley06_class(*ratios) == row.bpt_class, plateifu


def test_measured_centre_lands_on_the_planted_side_of_the_bpt_lines(lean_dr17):
    truth = read_truth(lean_dr17)
    tested: dict[str, int] = {}
    for plateifu in healthy_plateifus(lean_dr17):
        row = truth.loc[plateifu]
        if row.bpt_class == "lineless" or row.anomaly_kind != "none":
            continue
        fluxes, snr = _central_fluxes(lean_dr17.maps_paths[plateifu])
        if snr < MIN_SNR:
            continue
        measured = _ratios(fluxes)
        assert _kewley06_class(*measured) == row.bpt_class, (plateifu, measured)
        planted = (row.log_nii_ha, row.log_oiii_hb, row.log_sii_ha, row.log_oi_ha)
        assert np.allclose(measured, planted, atol=0.12), (plateifu, measured, planted)
        tested[row.bpt_class] = tested.get(row.bpt_class, 0) + 1
    assert set(tested) == {"sf", "composite", "seyfert", "liner"}, tested
    assert sum(tested.values()) >= 12


def test_lineless_galaxies_have_no_detectable_halpha(lean_dr17):
    truth = read_truth(lean_dr17)
    lineless = [p for p in healthy_plateifus(lean_dr17) if truth.loc[p, "bpt_class"] == "lineless"]
    assert lineless
    for plateifu in lineless:
        channels, flux, ivar, _ = read_lines(lean_dr17.maps_paths[plateifu])
        ha = channels["Ha-6564"]
        snr = flux[ha] * np.sqrt(ivar[ha])
        assert np.median(snr[ivar[ha] > 0]) < 3, plateifu


@pytest.mark.parametrize("release", ["DR17", "DR15"])
def test_tied_doublets_hold_exactly(release, full_dr17, full_dr15):
    summary = {"DR17": full_dr17, "DR15": full_dr15}[release]
    ties = TIED_FLUX_RATIOS[get_release(release).dapver]
    for plateifu in healthy_plateifus(summary):
        channels, flux, ivar, mask = read_lines(summary.maps_paths[plateifu])
        for weak, (strong, ratio) in ties.items():
            w, s = channels[weak], channels[strong]
            np.testing.assert_allclose(flux[w], np.float32(ratio) * flux[s], rtol=1e-6, atol=0)
            np.testing.assert_allclose(ivar[w] * np.float32(ratio) ** 2, ivar[s], rtol=1e-5)
            np.testing.assert_array_equal(mask[w], mask[s])
        if release == "DR15":
            # DAP 2.2.1 fits [NeIII]3968 freely: near 0.30 x 3869 but with its own noise.
            w, s = channels["NeIII-3968"], channels["NeIII-3869"]
            assert not np.allclose(flux[w], 0.30 * flux[s], rtol=1e-3)


def test_balmer_decrement_is_at_least_case_b(lean_dr17):
    truth = read_truth(lean_dr17)
    decrements = []
    for plateifu in healthy_plateifus(lean_dr17):
        row = truth.loc[plateifu]
        if row.bpt_class == "lineless" or row.anomaly_kind != "none":
            continue
        channels, flux, ivar, _ = read_lines(lean_dr17.maps_paths[plateifu])
        ha, hb, hg = channels["Ha-6564"], channels["Hb-4862"], channels["Hgam-4341"]
        bright = (flux[hb] * np.sqrt(ivar[hb]) > 10) & (ivar[ha] > 0)
        if bright.sum() < 10:
            continue
        decrement = flux[ha][bright].sum() / flux[hb][bright].sum()
        assert decrement > 2.86 * 0.97, plateifu  # dust only ever raises it (3% for noise)
        assert flux[hg][bright].sum() / flux[hb][bright].sum() < 0.468 * 1.05, plateifu
        decrements.append(decrement)
    assert len(decrements) >= 15
    assert np.mean(decrements) > 3.2  # reddened on average: typical E(B-V) of 0.1-0.5 mag


def test_noise_matches_ivar_and_files_match_the_model(lean_dr17):
    release = get_release(LEAN_DR17.release)
    channels = EMLINE_CHANNELS[release.dapver]
    galaxies = {str(g.plateifu): g for g in plan_release(LEAN_DR17)}
    residuals = []
    for plateifu in healthy_plateifus(lean_dr17)[:12]:
        params = galaxies[plateifu]
        model = model_galaxy(params)
        rng = seeded_rng(
            LEAN_DR17.seed, params.plateifu.plate, params.plateifu.ifu, LINE_NOISE_STREAM
        )
        expected = observe_lines(params, model, channels, release.dapver, rng)
        _, flux, ivar, mask = read_lines(lean_dr17.maps_paths[plateifu])
        np.testing.assert_array_equal(flux, expected.flux)
        np.testing.assert_array_equal(mask, expected.mask)
        good = ivar > 0
        if params.anomaly_kind == "garbled_line":
            good[channels.index(params.anomaly_line)] = False
        residuals.append(((flux - expected.truth) * np.sqrt(ivar))[good])
    normalised = np.concatenate(residuals)
    assert abs(normalised.mean()) < 0.02
    assert 0.97 < normalised.std() < 1.03


def test_heii_is_strong_only_in_seyfert_nuclei(lean_dr17):
    truth = read_truth(lean_dr17)
    ordinary = truth[truth["anomaly_kind"] != "strong_heii"]
    seyfert = ordinary[ordinary["bpt_class"] == "seyfert"]["log_heii_hb"]
    others = ordinary[ordinary["bpt_class"].isin(["sf", "composite", "liner"])]["log_heii_hb"]
    assert len(seyfert) and len(others)
    assert seyfert.min() > np.log10(0.15) > others.max()


def test_star_forming_disks_have_a_metallicity_gradient(lean_dr17):
    truth = read_truth(lean_dr17)
    drops = []
    for plateifu in healthy_plateifus(lean_dr17):
        row = truth.loc[plateifu]
        if row.bpt_class != "sf" or row.anomaly_kind != "none":
            continue
        channels, flux, ivar, _ = read_lines(lean_dr17.maps_paths[plateifu])
        nii, ha = flux[channels["NII-6585"]], flux[channels["Ha-6564"]]
        size = ha.shape[-1]
        rows, cols = np.mgrid[0:size, 0:size]
        radius = np.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2) * 0.5 / row.re_arcsec
        good = ivar[channels["Ha-6564"]] > 0
        inner, outer = good & (radius < 0.5), good & (radius > 0.8) & (radius < 1.5)
        if inner.sum() < 5 or outer.sum() < 5:
            continue
        drops.append(
            np.log10(nii[inner].sum() / ha[inner].sum())
            - np.log10(nii[outer].sum() / ha[outer].sum())
        )
    assert len(drops) >= 5
    assert np.median(drops) > 0.02  # [NII]/Ha falls outward


def test_most_seyferts_are_agn_targets(lean_dr17):
    truth = read_truth(lean_dr17)
    agn_mask = sum(1 << bit for bit in MNGTARG3_AGN_BITS.values())
    targeted = (truth["mngtarg3"] & agn_mask) > 0
    seyferts = truth["bpt_class"] == "seyfert"
    assert targeted[seyferts].mean() >= 0.5
    assert targeted[~seyferts].mean() < 0.3
    assert (truth["is_agn"] == truth["bpt_class"].isin(["seyfert", "liner"])).all()


def test_anomalies_are_planted_and_recorded(lean_dr17):
    truth = read_truth(lean_dr17)
    planted = truth[truth["anomaly_kind"] != "none"]
    assert 0.04 <= len(planted) / len(truth) <= 0.15
    assert sorted(lean_dr17.anomalies) == sorted(planted["anomaly_kind"].items())
    for plateifu, row in planted.iterrows():
        if row.anomaly_kind == "missing_line" and row.has_maps:
            channels, _, ivar, _ = read_lines(lean_dr17.maps_paths[plateifu])
            assert (ivar[channels[row.anomaly_line]] == 0).all()
        if row.anomaly_kind == "extreme_oiii":
            assert row.bpt_class == "sf" and row.log_oiii_hb > 0.6
        if row.anomaly_kind == "misaligned_line":
            assert row.anomaly_line in MISALIGNED_LINE_CANDIDATES and row.axis_ratio < 0.6
    assert "misaligned_line" in set(planted["anomaly_kind"])


def test_a_misaligned_line_is_turned_against_halpha_before_the_noise():
    # The smooth world: there a Balmer line follows H-alpha to better than 1% (a clumpy disk's
    # dust gradient spoils that a little; test_realism checks the turn on realistic disks).
    smooth = dataclasses.replace(LEAN_DR17, world="smooth")
    params = next(g for g in plan_release(smooth) if g.anomaly_kind == "misaligned_line")
    line = params.anomaly_line
    turned = model_galaxy(params).lines
    aligned = model_galaxy(dataclasses.replace(params, anomaly_kind="none")).lines
    np.testing.assert_array_equal(turned[line], np.rot90(aligned[line]))
    for other in ("Ha-6564", "Hb-4862", "Hgam-4341" if line != "Hgam-4341" else "Hdel-4102"):
        np.testing.assert_array_equal(turned[other], aligned[other])
    # A real disagreement of shapes: the turned map no longer follows H-alpha's.
    footprint = map_grid(params.ifu_size).footprint
    assert np.corrcoef(turned[line][footprint], turned["Ha-6564"][footprint])[0, 1] < 0.8
    assert np.corrcoef(aligned[line][footprint], aligned["Ha-6564"][footprint])[0, 1] > 0.99


def test_noise_has_unit_variance_everywhere_and_the_survey_correlation():
    rng = np.random.default_rng(5)
    noise = correlated_noise(rng, (3000, 12, 12)).astype(np.float64)
    assert noise.shape == (3000, 12, 12)
    # Corners and edges too: the field is drawn padded and cropped.
    np.testing.assert_allclose(noise.var(axis=0)[[0, 0, 11, 6], [0, 11, 11, 6]], 1.0, atol=0.08)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (0, 2), (2, 3)):
        product = noise[:, : 12 - dy, : 12 - dx] * noise[:, dy:, dx:]
        expected = np.exp(-(dy**2 + dx**2) / (2 * NOISE_CORRELATION_SIGMA**2))
        assert product.mean() == pytest.approx(expected, abs=0.02), (dy, dx)


def test_zero_correlation_length_gives_white_noise():
    noise = correlated_noise(np.random.default_rng(6), (2000, 6, 6), correlation_sigma=0.0)
    assert abs((noise[:, :, :-1] * noise[:, :, 1:]).mean()) < 0.02
    assert noise.var() == pytest.approx(1.0, abs=0.03)
