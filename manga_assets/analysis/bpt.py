"""BPT classification of spaxels and galaxy centres (Kewley et al. 2006 scheme).

Every diagram has y = log10([OIII]5008 / Hb) and x = log10 of [NII]6585/Ha,
([SII]6718+6732)/Ha or [OI]6302/Ha. The demarcation lines are those of
``shared/reference/manga-dap.md`` section 2.2 and the classification follows marvin's
``bpt_kewley06`` (``sdss/marvin``, ``python/marvin/utils/dap/bpt.py``), using all three diagrams:

- ``sf``: below Kauffmann 2003 in [NII] and below Kewley 2001 in [SII] and [OI] (each left of its
  asymptote);
- ``composite``: between Kauffmann 2003 and Kewley 2001 in [NII] (left of the Kauffmann
  asymptote, as in marvin) and star-forming in [SII] and [OI];
- ``seyfert`` / ``liner``: above Kewley 2001 (or right of its asymptote) in all three diagrams, then
  above / below the Kewley 2006 Seyfert-LINER lines in both [SII] and [OI] (not the
  Schawinski 2007 [NII] line: that is the rule for when [NII] is the only diagram, and here all
  three are needed anyway);
- ``ambiguous``: every line measured but none of the above (the diagrams disagree);
- ``invalid``: a needed line is masked, not positive, has IVAR 0, or S/N below the threshold.

Fluxes are DAP Gaussian-fit fluxes in 1E-17 erg/s/cm^2 per spaxel; only ratios are used, so the
unit cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Class names, in code order: a class code is the index of its name here.
BPT_CLASSES: tuple[str, ...] = ("sf", "composite", "seyfert", "liner", "ambiguous", "invalid")
BPT_CODE: dict[str, int] = {name: code for code, name in enumerate(BPT_CLASSES)}

# The lines a classification needs, by role.
HA, HB, OIII, NII, OI = "Ha-6564", "Hb-4862", "OIII-5008", "NII-6585", "OI-6302"
SII_PAIR = ("SII-6718", "SII-6732")
BPT_LINES: tuple[str, ...] = (HB, OIII, OI, HA, NII, *SII_PAIR)


@dataclass(frozen=True)
class Hyperbola:
    """A curved demarcation line y = scale / (x - asymptote) + offset, meant for x < asymptote.

    Right of its asymptote the formula turns over and means nothing; the classifier and the
    synthetic writer both cut there.
    """

    scale: float
    asymptote: float
    offset: float

    def y_at(self, x: np.ndarray | float) -> np.ndarray | float:
        """The line's y at ``x`` (a float or an array)."""
        return self.scale / (x - self.asymptote) + self.offset

    def x_at(self, y: np.ndarray | float) -> np.ndarray | float:
        """The line's x at ``y`` (a float or an array below ``offset``): the inverse of y_at."""
        return self.asymptote + self.scale / (y - self.offset)


# The curved lines, written once: the classifier below and ``manga_assets.synthetic.bpt`` use them.
KAUFFMANN03_NII = Hyperbola(scale=0.61, asymptote=0.05, offset=1.30)
KEWLEY01_NII = Hyperbola(scale=0.61, asymptote=0.47, offset=1.19)
KEWLEY01_SII = Hyperbola(scale=0.72, asymptote=0.32, offset=1.30)
KEWLEY01_OI = Hyperbola(scale=0.73, asymptote=-0.59, offset=1.33)

# Asymptotes of the curved lines: each curve only separates classes to the left of its asymptote.
KAUFFMANN03_NII_ASYMPTOTE = KAUFFMANN03_NII.asymptote
KEWLEY01_NII_ASYMPTOTE = KEWLEY01_NII.asymptote
KEWLEY01_SII_ASYMPTOTE = KEWLEY01_SII.asymptote
KEWLEY01_OI_ASYMPTOTE = KEWLEY01_OI.asymptote


def kauffmann03_nii(log_nii_ha: np.ndarray) -> np.ndarray:
    """Kauffmann et al. (2003) star-forming / composite line of the [NII] diagram.

    y = 0.61 / (x - 0.05) + 1.30, valid for x < 0.05 (marvin calls it ``kewley_sf_nii``).
    """
    return KAUFFMANN03_NII.y_at(log_nii_ha)


def kewley01_nii(log_nii_ha: np.ndarray) -> np.ndarray:
    """Kewley et al. (2001) maximum-starburst line of the [NII] diagram.

    y = 0.61 / (x - 0.47) + 1.19, valid for x < 0.47; above it (or at x >= 0.47) is AGN-like
    (marvin calls it ``kewley_comp_nii``).
    """
    return KEWLEY01_NII.y_at(log_nii_ha)


def kewley01_sii(log_sii_ha: np.ndarray) -> np.ndarray:
    """Kewley et al. (2001) star-forming / AGN line of the [SII] diagram.

    y = 0.72 / (x - 0.32) + 1.30 with x = log(([SII]6718 + [SII]6732) / Ha), valid for x < 0.32.
    """
    return KEWLEY01_SII.y_at(log_sii_ha)


def kewley01_oi(log_oi_ha: np.ndarray) -> np.ndarray:
    """Kewley et al. (2001) star-forming / AGN line of the [OI] diagram.

    y = 0.73 / (x + 0.59) + 1.33, valid for x < -0.59.
    """
    return KEWLEY01_OI.y_at(log_oi_ha)


def kewley06_sii(log_sii_ha: np.ndarray) -> np.ndarray:
    """Kewley et al. (2006) Seyfert / LINER line of the [SII] diagram: y = 1.89 x + 0.76."""
    return 1.89 * log_sii_ha + 0.76


def kewley06_oi(log_oi_ha: np.ndarray) -> np.ndarray:
    """Kewley et al. (2006) Seyfert / LINER line of the [OI] diagram: y = 1.18 x + 1.30."""
    return 1.18 * log_oi_ha + 1.30


def schawinski07_nii(log_nii_ha: np.ndarray) -> np.ndarray:
    """Schawinski et al. (2007) Seyfert / LINER line of the [NII] diagram: y = 1.05 x + 0.45.

    The classifier does not use it: it has all three diagrams, and splits Seyferts from LINERs
    with the Kewley 2006 [SII] and [OI] lines, as marvin's ``bpt_kewley06`` and the reference do
    (Schawinski's line is the rule for when only [NII] is at hand). The synthetic writer uses it
    to draw Seyferts and LINERs that are the same kind in the [NII] diagram too, see
    ``manga_assets.synthetic.bpt``.
    """
    return 1.05 * log_nii_ha + 0.45


def classify_ratios(
    log_nii_ha: np.ndarray,
    log_sii_ha: np.ndarray,
    log_oi_ha: np.ndarray,
    log_oiii_hb: np.ndarray,
    valid: np.ndarray,
) -> np.ndarray:
    """Class codes (indices into :data:`BPT_CLASSES`) from the four log ratios.

    Parameters
    ----------
    log_nii_ha, log_sii_ha, log_oi_ha, log_oiii_hb : ndarray
        log10 line ratios, all of one shape; values where ``valid`` is False are ignored.
    valid : ndarray of bool
        Where every line behind the ratios was measured well enough to classify.

    Returns
    -------
    ndarray of int8
        Same shape as the inputs.
    """
    x_nii, x_sii, x_oi, y = (
        np.where(valid, np.asarray(a, dtype=np.float64), 0.0)
        for a in (log_nii_ha, log_sii_ha, log_oi_ha, log_oiii_hb)
    )
    # The curves change sign at their asymptotes; the x cuts keep only the branch that is meant.
    with np.errstate(divide="ignore", invalid="ignore"):
        sf_nii = (x_nii < KAUFFMANN03_NII_ASYMPTOTE) & (y < kauffmann03_nii(x_nii))
        sf_sii = (x_sii < KEWLEY01_SII_ASYMPTOTE) & (y < kewley01_sii(x_sii))
        sf_oi = (x_oi < KEWLEY01_OI_ASYMPTOTE) & (y < kewley01_oi(x_oi))
        below_kewley01_nii = (x_nii < KEWLEY01_NII_ASYMPTOTE) & (y < kewley01_nii(x_nii))
        above_kauffmann03 = (x_nii < KAUFFMANN03_NII_ASYMPTOTE) & (y > kauffmann03_nii(x_nii))
        agn_nii = (x_nii >= KEWLEY01_NII_ASYMPTOTE) | (y > kewley01_nii(x_nii))
        agn_sii = (x_sii >= KEWLEY01_SII_ASYMPTOTE) | (y > kewley01_sii(x_sii))
        agn_oi = (x_oi >= KEWLEY01_OI_ASYMPTOTE) | (y > kewley01_oi(x_oi))

    sf = sf_nii & sf_sii & sf_oi
    composite = above_kauffmann03 & below_kewley01_nii & sf_sii & sf_oi
    agn = agn_nii & agn_sii & agn_oi
    seyfert = agn & (y > kewley06_sii(x_sii)) & (y > kewley06_oi(x_oi))
    liner = agn & (y < kewley06_sii(x_sii)) & (y < kewley06_oi(x_oi))

    codes = np.full(np.shape(valid), BPT_CODE["ambiguous"], dtype=np.int8)
    for name, region in (
        ("sf", sf),
        ("composite", composite),
        ("seyfert", seyfert),
        ("liner", liner),
    ):
        codes[region] = BPT_CODE[name]
    codes[~np.asarray(valid, dtype=bool)] = BPT_CODE["invalid"]
    return codes


def class_names(codes: np.ndarray) -> np.ndarray:
    """The class names of an array of class codes."""
    return np.asarray(BPT_CLASSES, dtype=object)[np.asarray(codes)]


def _line_index(lines: Sequence[str]) -> dict[str, int]:
    index = {str(name): i for i, name in enumerate(lines)}
    missing = [name for name in BPT_LINES if name not in index]
    if missing:
        raise ValueError(f"BPT classification needs lines {missing!r}, not in {list(lines)!r}")
    return index


def _measured(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Where a line map holds a measurement at all: not masked, IVAR > 0, finite flux."""
    return ~mask & (ivar > 0) & np.isfinite(flux)


def classify_spaxels(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    lines: Sequence[str],
    snr_min: float = 3.0,
) -> np.ndarray:
    """BPT class code of every spaxel of a line-map cube.

    Parameters
    ----------
    flux : ndarray, (L, H, W)
        Line fluxes in 1E-17 erg/s/cm^2 per spaxel.
    ivar : ndarray, (L, H, W)
        Inverse variance of ``flux``.
    mask : ndarray of bool, (L, H, W)
        True where a value is invalid.
    lines : sequence of str
        The L line names (DAP names, e.g. 'Ha-6564'); must include :data:`BPT_LINES`.
    snr_min : float, optional
        Minimum S/N = flux * sqrt(ivar) of every needed line, 3 by default. Both [SII] lines must
        pass on their own before they are summed, as in marvin.

    Returns
    -------
    ndarray of int8, (H, W)
        Indices into :data:`BPT_CLASSES`; :func:`class_names` turns them into names.

    Raises
    ------
    ValueError
        If a needed line is missing from ``lines``.
    """
    index = _line_index(lines)
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)

    valid = np.ones(flux.shape[1:], dtype=bool)
    for name in BPT_LINES:
        i = index[name]
        snr = flux[i] * np.sqrt(np.clip(ivar[i], 0.0, None))
        valid &= _measured(flux[i], ivar[i], mask[i]) & (flux[i] > 0) & (snr >= snr_min)

    # Invalid spaxels get ratio 1 (log 0) so no warning is raised; classify_ratios ignores them.
    def log_ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.log10(np.where(valid, top, 1.0) / np.where(valid, bottom, 1.0))

    sii = flux[index[SII_PAIR[0]]] + flux[index[SII_PAIR[1]]]
    return classify_ratios(
        log_ratio(flux[index[NII]], flux[index[HA]]),
        log_ratio(sii, flux[index[HA]]),
        log_ratio(flux[index[OI]], flux[index[HA]]),
        log_ratio(flux[index[OIII]], flux[index[HB]]),
        valid,
    )


@dataclass(frozen=True)
class CentralBPT:
    """BPT class of a galaxy centre, from fluxes summed over a central aperture.

    Attributes
    ----------
    bpt_class : str
        One of :data:`BPT_CLASSES`.
    log_nii_ha, log_sii_ha, log_oi_ha, log_oiii_hb : float
        log10 ratios of the summed central fluxes; NaN where a summed flux is not positive or the
        centre has too few valid spaxels.
    snr_ha, snr_hb, snr_oiii, snr_nii, snr_sii, snr_oi : float
        S/N of each summed central flux (the [SII] doublet summed); NaN when not measured.
    n_valid_spaxels : int
        Central spaxels where all seven lines are measured (not masked, IVAR > 0).
    n_aperture_spaxels : int
        Spaxels in the central aperture.
    """

    bpt_class: str
    log_nii_ha: float
    log_sii_ha: float
    log_oi_ha: float
    log_oiii_hb: float
    snr_ha: float
    snr_hb: float
    snr_oiii: float
    snr_nii: float
    snr_sii: float
    snr_oi: float
    n_valid_spaxels: int
    n_aperture_spaxels: int

    def as_row(self) -> dict[str, float | int | str]:
        """The fields as a flat dict, one row of a per-galaxy table."""
        return asdict(self)


def central_aperture(height: int, width: int, radius_pix: float) -> np.ndarray:
    """Boolean (H, W) map of pixels within ``radius_pix`` of the grid centre."""
    y, x = np.mgrid[:height, :width]
    return np.hypot(y - (height - 1) / 2, x - (width - 1) / 2) <= radius_pix


def classify_centre(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    lines: Sequence[str],
    radius_pix: float = 2.0,
    min_valid_spaxels: int = 3,
    snr_min: float = 3.0,
) -> CentralBPT:
    """BPT class of the galaxy centre, like a fibre spectrum of the nucleus.

    The fluxes of each needed line are summed over the central spaxels where all seven lines are
    measured (the same spaxels for every line, so ratios compare like with like); variances add.
    The summed fluxes are then classified with :func:`classify_ratios`; a summed line that is not
    positive or has S/N below ``snr_min`` makes the centre ``invalid``. Summing first lets a centre
    with faint but consistent lines be classified although single spaxels are too noisy.

    Parameters
    ----------
    flux, ivar, mask, lines
        As for :func:`classify_spaxels`; the galaxy is centred on the grid.
    radius_pix : float, optional
        Aperture radius in grid pixels around the grid centre ((H-1)/2, (W-1)/2), 2 by default.
    min_valid_spaxels : int, optional
        Fewer valid central spaxels than this give ``invalid`` rather than a guess, 3 by default.
    snr_min : float, optional
        Minimum S/N of each summed line, 3 by default.

    Returns
    -------
    CentralBPT

    Raises
    ------
    ValueError
        If a needed line is missing from ``lines``.
    """
    index = _line_index(lines)
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    aperture = central_aperture(flux.shape[1], flux.shape[2], radius_pix)

    usable = aperture.copy()
    for name in BPT_LINES:
        i = index[name]
        usable &= _measured(flux[i], ivar[i], mask[i])
    n_valid = int(usable.sum())
    n_aperture = int(aperture.sum())

    nan = float("nan")
    if n_valid < min_valid_spaxels:
        return CentralBPT("invalid", *[nan] * 10, n_valid, n_aperture)

    line_flux = {name: float(flux[index[name]][usable].sum()) for name in BPT_LINES}
    line_variance = {name: float((1.0 / ivar[index[name]][usable]).sum()) for name in BPT_LINES}
    # Like spaxels, each line must be detected on its own, [SII]6718 and 6732 included.
    valid = all(
        line_flux[name] > 0 and line_flux[name] / np.sqrt(line_variance[name]) >= snr_min
        for name in BPT_LINES
    )

    roles = {"ha": (HA,), "hb": (HB,), "oiii": (OIII,), "nii": (NII,), "sii": SII_PAIR, "oi": (OI,)}
    total = {role: sum(line_flux[n] for n in names) for role, names in roles.items()}
    snr = {
        role: float(total[role] / np.sqrt(sum(line_variance[n] for n in names)))
        for role, names in roles.items()
    }

    def log_ratio(top: float, bottom: float) -> float:
        return float(np.log10(top / bottom)) if top > 0 and bottom > 0 else nan

    ratios = (
        log_ratio(total["nii"], total["ha"]),
        log_ratio(total["sii"], total["ha"]),
        log_ratio(total["oi"], total["ha"]),
        log_ratio(total["oiii"], total["hb"]),
    )
    code = classify_ratios(*(np.array(r) for r in ratios), np.array(valid))
    return CentralBPT(
        BPT_CLASSES[int(code)],
        *ratios,
        snr["ha"], snr["hb"], snr["oiii"], snr["nii"], snr["sii"], snr["oi"],
        n_valid, n_aperture,
    )  # fmt: skip
