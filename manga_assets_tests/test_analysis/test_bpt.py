import numpy as np
import pytest

from manga_assets.analysis import bpt
from manga_assets.analysis.bpt import (
    BPT_CLASSES,
    class_names,
    classify_centre,
    classify_ratios,
    classify_spaxels,
)
from manga_assets_tests.test_analysis.helpers import LINES, cube_from_ratios, spaxel_row

# Points (x_nii, x_sii, x_oi, y) well inside each region, checked by hand against the equations.
SF = (-0.7, -0.6, -1.6, -0.3)
COMPOSITE = (-0.2, -0.6, -1.6, 0.0)
SEYFERT = (0.1, 0.0, -0.5, 1.0)
LINER = (0.2, 0.1, -0.3, 0.0)
# Star-forming in [NII] and [OI], AGN in [SII]: the diagrams disagree.
AMBIGUOUS_DIAGRAMS = (-0.7, 0.4, -1.6, -0.3)
# AGN everywhere, but Seyfert by [SII] (y > 0.76) and LINER by [OI] (y < 1.30).
AMBIGUOUS_AGN = (0.1, 0.0, 0.0, 1.0)


def classify_point(x_nii: float, x_sii: float, x_oi: float, y: float) -> str:
    code = classify_ratios(*(np.array([v]) for v in (x_nii, x_sii, x_oi, y)), np.array([True]))
    return BPT_CLASSES[int(code[0])]


@pytest.mark.parametrize(
    ("line", "x", "expected"),
    [
        (bpt.kauffmann03_nii, -0.95, 0.61 / (-1.0) + 1.30),
        (bpt.kewley01_nii, -0.14, 0.61 / (-0.61) + 1.19),
        (bpt.kewley01_sii, -0.4, 0.72 / (-0.72) + 1.30),
        (bpt.kewley01_oi, -1.32, 0.73 / (-0.73) + 1.33),
        (bpt.kewley06_sii, 0.5, 1.89 * 0.5 + 0.76),
        (bpt.kewley06_oi, -0.5, 1.18 * -0.5 + 1.30),
        (bpt.schawinski07_nii, 0.2, 1.05 * 0.2 + 0.45),
    ],
)
def test_demarcation_line_equations(line, x, expected):
    assert line(np.float64(x)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        (SF, "sf"),
        (COMPOSITE, "composite"),
        (SEYFERT, "seyfert"),
        (LINER, "liner"),
        (AMBIGUOUS_DIAGRAMS, "ambiguous"),
        (AMBIGUOUS_AGN, "ambiguous"),
        # Right of every asymptote: AGN whatever the curves' (positive) values there.
        ((0.6, 0.5, -0.2, -1.0), "liner"),
    ],
)
def test_each_class_from_ratios(point, expected):
    assert classify_point(*point) == expected


# The published equations, each at points worked by hand (Kauffmann et al. 2003; Kewley et al. 2001
# and 2006; Schawinski et al. 2007; shared/reference/manga-dap.md section 2.2).
@pytest.mark.parametrize(
    ("line", "x", "y"),
    [
        (bpt.kauffmann03_nii, -0.56, 0.30),  # 0.61 / (x - 0.05) + 1.30
        (bpt.kauffmann03_nii, -1.17, 0.80),
        (bpt.kewley01_nii, -0.14, 0.19),  # 0.61 / (x - 0.47) + 1.19
        (bpt.kewley01_nii, 0.165, -0.81),
        (bpt.kewley01_sii, -0.40, 0.30),  # 0.72 / (x - 0.32) + 1.30
        (bpt.kewley01_sii, -0.04, -0.70),
        (bpt.kewley01_oi, -1.32, 0.33),  # 0.73 / (x + 0.59) + 1.33
        (bpt.kewley01_oi, -0.955, -0.67),
        (bpt.kewley06_sii, 0.0, 0.76),  # 1.89 x + 0.76
        (bpt.kewley06_sii, -0.4, 0.004),
        (bpt.kewley06_oi, 0.0, 1.30),  # 1.18 x + 1.30
        (bpt.kewley06_oi, -1.0, 0.12),
        (bpt.schawinski07_nii, 0.0, 0.45),  # 1.05 x + 0.45
        (bpt.schawinski07_nii, 0.2, 0.66),
    ],
)
def test_demarcation_lines_pass_their_published_points(line, x, y):
    assert line(x) == pytest.approx(y, abs=1e-12)
    assert line(np.array([x]))[0] == pytest.approx(y, abs=1e-12)


@pytest.mark.parametrize(
    "curve", [bpt.KAUFFMANN03_NII, bpt.KEWLEY01_NII, bpt.KEWLEY01_SII, bpt.KEWLEY01_OI]
)
def test_curve_x_at_inverts_y_at_left_of_the_asymptote(curve):
    x = curve.asymptote - np.array([0.05, 0.3, 1.0, 2.5])
    assert curve.x_at(curve.y_at(x)) == pytest.approx(x)


def test_synthetic_writer_draws_with_the_classifier_lines():
    from manga_assets.synthetic import bpt as synthetic_bpt

    for name in ("kauffmann03_nii", "kewley01_nii", "kewley01_sii", "kewley01_oi",
                 "kewley06_sii", "kewley06_oi", "schawinski07_nii"):  # fmt: skip
        assert getattr(synthetic_bpt, name) is getattr(bpt, name), name


def test_seyfert_liner_split_ignores_the_schawinski_line():
    # Seyfert by Kewley 2006 in [SII] and [OI], but below Schawinski 2007 in [NII]
    # (1.05 * 0.6 + 0.45 = 1.08 > 1.0): the classifier's rule is Kewley 2006.
    point = (0.6, 0.0, -0.5, 1.0)
    assert point[3] < bpt.schawinski07_nii(point[0])
    assert classify_point(*point) == "seyfert"


def below_and_above(line, x, offset=0.05):
    return line(x) - offset, line(x) + offset


def test_kauffmann03_separates_sf_from_composite():
    # [SII] and [OI] far on their star-forming side (lines at 0.755 and 0.607).
    below, above = below_and_above(bpt.kauffmann03_nii, -0.7)
    assert classify_point(-0.7, -1.0, -1.6, below) == "sf"
    assert classify_point(-0.7, -1.0, -1.6, above) == "composite"


def test_kewley01_nii_bounds_composites():
    below, above = below_and_above(bpt.kewley01_nii, -0.2)
    assert classify_point(-0.2, -0.6, -1.6, below) == "composite"
    # Above the maximum-starburst line in [NII] but star-forming in [SII] and [OI].
    assert classify_point(-0.2, -0.6, -1.6, above) == "ambiguous"


def test_kewley01_sii_separates_sf_from_agn():
    below, above = below_and_above(bpt.kewley01_sii, 0.0)
    assert classify_point(0.2, 0.0, -0.3, above) == "liner"
    assert classify_point(0.2, 0.0, -0.3, below) == "ambiguous"


def test_kewley01_oi_separates_sf_from_agn():
    below, above = below_and_above(bpt.kewley01_oi, -1.0)
    assert classify_point(0.2, 0.1, -1.0, above) == "liner"
    assert classify_point(0.2, 0.1, -1.0, below) == "ambiguous"


def test_kewley06_sii_separates_seyfert_from_liner():
    # The [OI] Seyfert line sits at 0.651 for x_oi = -0.55, below both test points.
    below, above = below_and_above(bpt.kewley06_sii, 0.0)
    assert classify_point(0.2, 0.0, -0.55, above) == "seyfert"
    assert classify_point(0.2, 0.0, -0.55, below) == "ambiguous"


def test_kewley06_oi_separates_seyfert_from_liner():
    # The [SII] Seyfert line sits at 0.571 for x_sii = -0.1, below both test points.
    below, above = below_and_above(bpt.kewley06_oi, -0.4)
    assert classify_point(0.2, -0.1, -0.4, above) == "seyfert"
    assert classify_point(0.2, -0.1, -0.4, below) == "ambiguous"


def test_classify_spaxels_maps_each_region():
    points = (SF, COMPOSITE, SEYFERT, LINER, AMBIGUOUS_DIAGRAMS)
    flux, ivar, mask = cube_from_ratios(spaxel_row(*points))
    codes = classify_spaxels(flux, ivar, mask, LINES)
    assert codes.shape == (1, len(points))
    assert list(class_names(codes[0])) == ["sf", "composite", "seyfert", "liner", "ambiguous"]


@pytest.mark.parametrize(
    "spoil",
    ["low_snr", "masked", "zero_flux", "negative_flux", "zero_ivar", "sii_6732_low_snr"],
)
def test_spaxel_is_invalid_when_a_needed_line_is_unusable(spoil):
    flux, ivar, mask = cube_from_ratios(spaxel_row(SEYFERT, SEYFERT))
    oi = LINES.index("OI-6302")
    if spoil == "low_snr":
        ivar[oi, 0, 0] = (2.9 / flux[oi, 0, 0]) ** 2
    elif spoil == "masked":
        mask[oi, 0, 0] = True
    elif spoil == "zero_flux":
        flux[oi, 0, 0] = 0.0
    elif spoil == "negative_flux":
        flux[oi, 0, 0] = -5.0
    elif spoil == "zero_ivar":
        ivar[oi, 0, 0] = 0.0
    elif spoil == "sii_6732_low_snr":
        sii = LINES.index("SII-6732")
        ivar[sii, 0, 0] = (1.0 / flux[sii, 0, 0]) ** 2
    codes = classify_spaxels(flux, ivar, mask, LINES)
    assert list(class_names(codes[0])) == ["invalid", "seyfert"]


def test_snr_threshold_is_configurable():
    flux, ivar, mask = cube_from_ratios(spaxel_row(SF, SF), snr=3.05)
    flux_low, ivar_low, _ = cube_from_ratios(spaxel_row(SF), snr=2.95)
    ivar[:, :, 1] = ivar_low[:, :, 0]
    assert list(class_names(classify_spaxels(flux, ivar, mask, LINES))[0]) == ["sf", "invalid"]
    codes = classify_spaxels(flux, ivar, mask, LINES, snr_min=2.0)
    assert list(class_names(codes)[0]) == ["sf", "sf"]
    codes = classify_spaxels(flux, ivar, mask, LINES, snr_min=5.0)
    assert list(class_names(codes)[0]) == ["invalid", "invalid"]


def test_unmeasured_line_other_than_bpt_lines_does_not_matter():
    flux, ivar, mask = cube_from_ratios(spaxel_row(SF))
    mask[LINES.index("HeII-4687")] = True
    assert class_names(classify_spaxels(flux, ivar, mask, LINES))[0, 0] == "sf"


def test_missing_line_name_raises():
    flux, ivar, mask = cube_from_ratios(spaxel_row(SF))
    lines = [name if name != "OI-6302" else "OI-6300" for name in LINES]
    with pytest.raises(ValueError, match="OI-6302"):
        classify_spaxels(flux, ivar, mask, lines)


def uniform_cube(point, size=9, snr=50.0):
    return cube_from_ratios(np.broadcast_to(np.asarray(point), (size, size, 4)), snr=snr)


def test_centre_classifies_summed_central_fluxes():
    flux, ivar, mask = uniform_cube(SEYFERT)
    result = classify_centre(flux, ivar, mask, LINES, radius_pix=1.0, min_valid_spaxels=3)
    assert result.bpt_class == "seyfert"
    # Radius 1 around the centre of a 9x9 grid: the centre and its 4 edge neighbours.
    assert result.n_aperture_spaxels == 5
    assert result.n_valid_spaxels == 5
    ratios = (result.log_nii_ha, result.log_sii_ha, result.log_oi_ha, result.log_oiii_hb)
    assert ratios == pytest.approx(SEYFERT, abs=1e-5)
    # Five spaxels at S/N 50 each: summed S/N is 50 * sqrt(5).
    assert result.snr_ha == pytest.approx(50 * np.sqrt(5), rel=1e-4)
    assert set(result.as_row()) >= {"bpt_class", "log_oiii_hb", "snr_oi", "n_valid_spaxels"}


def test_centre_with_too_few_valid_spaxels_is_invalid():
    flux, ivar, mask = uniform_cube(SF)
    mask[LINES.index("Hb-4862"), 3:6, 3:6] = True
    mask[LINES.index("Hb-4862"), 4, 4] = False
    result = classify_centre(flux, ivar, mask, LINES, radius_pix=1.5, min_valid_spaxels=3)
    assert result.bpt_class == "invalid"
    assert result.n_valid_spaxels == 1
    assert np.isnan(result.log_oiii_hb)


def test_centre_sums_faint_spaxels_into_a_detection():
    # Each spaxel at S/N 2 fails on its own; nine summed reach S/N 6.
    flux, ivar, mask = uniform_cube(LINER, snr=2.0)
    spaxels = classify_spaxels(flux, ivar, mask, LINES)
    assert (class_names(spaxels) == "invalid").all()
    result = classify_centre(flux, ivar, mask, LINES, radius_pix=1.5, min_valid_spaxels=3)
    assert result.n_valid_spaxels == 9
    assert result.bpt_class == "liner"


def test_centre_with_undetected_summed_line_is_invalid():
    flux, ivar, mask = uniform_cube(SF, snr=0.5)
    result = classify_centre(flux, ivar, mask, LINES, radius_pix=1.5, min_valid_spaxels=3)
    assert result.n_valid_spaxels == 9
    assert result.bpt_class == "invalid"
    assert result.snr_oi == pytest.approx(1.5, rel=1e-4)
