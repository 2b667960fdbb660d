"""Emission-line maps of a synthetic galaxy: noise-free model, then noise, IVAR and DAP mask.

The model is an inclined thin disk (exponential, or a ring) of ionised gas plus optional compact
nuclei. Each spaxel's line ratios are log-linear blends: near a nucleus they are the nucleus's,
far from it the disk's, whose ratios follow the star-forming sequence with a radial metallicity
gradient in [NII]/Ha. Balmer lines have case-B ratios to Hb and are reddened by a Cardelli law with
an E(B-V) that falls with radius; the BPT ratios ([NII]/Ha, [OIII]/Hb, [SII]/Ha, [OI]/Ha) are set
on observed fluxes so that the planted values are what a classifier measures. Fluxes are in the
DAP's unit, 1E-17 erg/s/cm^2/spaxel, corrected for Galactic but not internal extinction.

In the realistic world (:mod:`~manga_assets.synthetic.texture`) a star-forming disk's H-alpha is
split into PSF-sized HII complexes, a smooth floor of faint HII regions modulated by arms, and
extended diffuse ionised gas; the HII gas carries the ratios above, the DIG the same ratios raised
by its own offsets, and each line is the sum of the two.

The noise is spatially correlated as in real DAP maps (Westfall et al. 2019, AJ 158, 231,
Sect. 6.2): two spaxels a distance D apart correlate as exp(-D^2 / (2 sigma^2)), sigma = 1.92
spaxels, while each spaxel's own noise is still 1/sqrt(IVAR).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from manga_assets.dap.datamodel import (
    REST_WAVELENGTHS,
    SPEED_OF_LIGHT_KMS,
    TIED_FLUX_RATIOS,
    mask_value,
)
from manga_assets.synthetic.bpt import sf_oi_at, sf_sii_at, star_forming_sequence
from manga_assets.synthetic.extinction import cardelli_k
from manga_assets.synthetic.geometry import DiskCoordinates, MapGrid, disk_coordinates, map_grid
from manga_assets.synthetic.population import GalaxyParams
from manga_assets.synthetic.texture import (
    PSF_SIGMA_ARCSEC,
    clump_luminosities,
    clump_positions,
    disk_modulation,
    dust_lane_ebv,
    foreground_star,
    profile_total,
    render_clumps,
)

# Case-B recombination (10^4 K, low density) relative to Hb.
CASE_B_HALPHA_HBETA = 2.86
BALMER_TO_HBETA: dict[str, float] = {
    "Hgam-4341": 0.468,
    "Hdel-4102": 0.259,
    "Heps-3971": 0.159,
    "Hzet-3890": 0.105,
    "Heta-3836": 0.0731,
    "Hthe-3798": 0.0530,
    "H11-3771": 0.0397,
    "H12-3751": 0.0305,
    # Paschen lines, approximate case-B values.
    "Peps-9548": 0.0366,
    "Pzet-9231": 0.0266,
    "Peta-9017": 0.0198,
}
# Fixed intrinsic ratios of lines that carry no diagnostic weight here, relative to Hb.
HELIUM_I_TO_HBETA: dict[str, float] = {"HeI-5877": 0.11, "HeI-3889": 0.09, "HeI-7067": 0.028}
# Physical doublet ratios (weak/strong) used where the DAP version does not tie them.
PHYSICAL_DOUBLET_RATIOS: dict[str, tuple[str, float]] = {
    "NeIII-3968": ("NeIII-3869", 0.30),
    "OIII-4960": ("OIII-5008", 0.335),
    "OI-6365": ("OI-6302", 0.32),
    "NII-6549": ("NII-6585", 0.34),
    "SIII-9071": ("SIII-9533", 0.41),
    "ArIII-7753": ("ArIII-7137", 0.24),
}
# [OII]3729/3727 and [NI]5199/5201 at low density.
OII_3729_TO_3727 = 1.4
NI_5199_FRACTION = 0.6

# A dust lane's extra E(B-V) above which the DAP's fit fails (H-alpha dimmed by > 2 mag).
DUST_LANE_FAILED_EBV = 0.8
# MaNGA spectra end here (observed Angstrom); redder lines are not measured.
SPECTRUM_RED_END_ANGSTROM = 10300.0
# Shares of covered spaxels whose fit failed (all lines) and of values flagged UNRELIABLE.
FAILED_FIT_FRACTION = 0.004
UNRELIABLE_FRACTION = 0.02
# Gaussian correlation length of the noise of neighbouring spaxels, in spaxels (Westfall et al.
# 2019). Written here rather than taken from the pipeline, so that tests of the pipeline's
# covariance handling compare it with an independent statement of the survey.
NOISE_CORRELATION_SIGMA = 1.92

_NOCOV = mask_value(["NOCOV", "DONOTUSE"])
_FAILED = mask_value(["MATHERROR", "DONOTUSE"])
_NOVALUE = mask_value(["NOVALUE", "DONOTUSE"])
_UNRELIABLE = mask_value(["UNRELIABLE"])
_FORESTAR = mask_value(["FORESTAR", "DONOTUSE"])


@dataclass(frozen=True)
class GalaxyModel:
    """Noise-free maps of one galaxy on its MAPS grid.

    Attributes
    ----------
    grid : MapGrid
        Map grid and IFU footprint.
    coords : DiskCoordinates
        In-plane radius (arcsec) and azimuth of every spaxel.
    lines : dict of str to numpy.ndarray
        Observed (reddened) flux of every line of the DR17 list, 1E-17 erg/s/cm^2/spaxel, (n, n)
        float32, the ties of no particular DAP version applied.
    ebv : numpy.ndarray
        Internal E(B-V) of the gas, mag.
    continuum : numpy.ndarray
        Stellar continuum at 5500 A rest, 1E-17 erg/s/cm^2/ang/spaxel.
    gas_velocity, stellar_velocity : numpy.ndarray
        Line-of-sight velocity relative to the systemic cz, km/s.
    gas_sigma, stellar_sigma : numpy.ndarray
        Velocity dispersion, km/s.
    centre_ratios : dict of str to float
        log10 BPT (and HeII/Hb) ratios at the galaxy centre (:func:`centre_ratios`).
    foreground_star, fit_failed : numpy.ndarray or None
        Spaxels an oddity hides from the DAP in every line: a foreground star's disk, or the
        core of a dust lane where the fit failed (None: none).
    """

    grid: MapGrid
    coords: DiskCoordinates
    lines: dict[str, np.ndarray]
    ebv: np.ndarray
    continuum: np.ndarray
    gas_velocity: np.ndarray
    stellar_velocity: np.ndarray
    gas_sigma: np.ndarray
    stellar_sigma: np.ndarray
    centre_ratios: dict[str, float]
    foreground_star: np.ndarray | None = None
    fit_failed: np.ndarray | None = None


def continuum_shape(rest_wavelength: float | np.ndarray) -> np.ndarray:
    """Stellar continuum relative to 5500 A: the 4000-A break and a slowly falling red side."""
    wave = np.asarray(rest_wavelength, dtype=np.float64)
    blue = np.clip(1.0 - 0.5 * (4300.0 - wave) / 800.0, 0.3, 1.0)
    red = 1.0 - 0.1 * (wave - 5500.0) / 3000.0
    return np.where(wave < 4300.0, blue, np.minimum(red, 1.0))


def _disk_ratios(params: GalaxyParams, radius_re: np.ndarray) -> dict[str, np.ndarray]:
    """log10 ratios of the extended gas at in-plane radius ``radius_re`` (effective radii)."""
    disk = params.disk
    if disk.star_forming:
        nii = disk.nii_centre - disk.nii_gradient * np.minimum(radius_re, 3.0)
        oiii = star_forming_sequence(nii, disk.sf_offset)
        ratios = {
            "nii_ha": nii,
            "oiii_hb": oiii,
            "sii_ha": sf_sii_at(oiii, disk.sii_offset),
            "oi_ha": sf_oi_at(oiii, disk.oi_offset),
            # Lower metallicity (lower [NII]/Ha) means a harder field and more [OII].
            "oii_hb": np.clip(0.3 - 0.6 * (nii + 0.6), -0.2, 0.8),
        }
    else:
        fixed = disk.fixed_bpt
        ones = np.ones_like(radius_re)
        ratios = {
            "nii_ha": fixed.nii_ha * ones,
            "oiii_hb": fixed.oiii_hb * ones,
            "sii_ha": fixed.sii_ha * ones,
            "oi_ha": fixed.oi_ha * ones,
            "oii_hb": 0.6 * ones,
        }
    for key, value in disk.extras.items():
        ratios[key] = value * np.ones_like(radius_re)
    return ratios


def _blend_ratios(
    params: GalaxyParams, grid: MapGrid, coords: DiskCoordinates
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Ratio maps with each nucleus's ratios blended in, and each nucleus's weight map."""
    ratios = _disk_ratios(params, coords.radius / np.float32(params.re_arcsec))
    weights = []
    for nucleus in params.nuclei:
        distance2 = (grid.x - nucleus.offset_arcsec[0]) ** 2 + (
            grid.y - nucleus.offset_arcsec[1]
        ) ** 2
        weights.append(np.exp(-distance2 / (2 * nucleus.extent_arcsec**2)))
    if weights:
        total = np.sum(weights, axis=0)
        scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-12), 1.0)
        weights = [w * scale for w in weights]
        disk_weight = 1.0 - np.sum(weights, axis=0)
        ratios = {
            key: disk_weight * value
            + sum(
                w * nucleus.ratios[key] for w, nucleus in zip(weights, params.nuclei, strict=True)
            )
            for key, value in ratios.items()
        }
    return ratios, weights


def _planted_centre_ratios(params: GalaxyParams) -> dict[str, float]:
    central = [n for n in params.nuclei if n.offset_arcsec == (0.0, 0.0)]
    if central:
        source = central[0].ratios
    else:
        source = {key: float(value) for key, value in _disk_ratios(params, np.zeros(())).items()}
    return {key: float(source[key]) for key in ("nii_ha", "oiii_hb", "sii_ha", "oi_ha", "heii_hb")}


def centre_ratios(params: GalaxyParams) -> dict[str, float]:
    """The ratios at the galaxy centre.

    Smooth world: the planted ones (the central nucleus's, else the disk's at r=0). Realistic
    world: the noise-free BPT ratios over the central 2x2 spaxels, where the HII regions, the DIG
    and any nucleus mix (HeII/Hb stays the planted value, which the DIG does not change).
    """
    if params.texture is None and params.oddity is None:
        return _planted_centre_ratios(params)
    return model_galaxy(params).centre_ratios


def _measured_centre_ratios(params: GalaxyParams, lines: dict[str, np.ndarray]) -> dict:
    """log10 BPT ratios of the noise-free lines summed over the central 2x2 spaxels."""
    window = _central_window(lines["Ha-6564"].shape[-1])

    def total(*names: str) -> float:
        return float(sum(np.sum(lines[name][window], dtype=np.float64) for name in names))

    return {
        "nii_ha": float(np.log10(total("NII-6585") / total("Ha-6564"))),
        "oiii_hb": float(np.log10(total("OIII-5008") / total("Hb-4862"))),
        "sii_ha": float(np.log10(total("SII-6718", "SII-6732") / total("Ha-6564"))),
        "oi_ha": float(np.log10(total("OI-6302") / total("Ha-6564"))),
        "heii_hb": _planted_centre_ratios(params)["heii_hb"],
    }


def _disk_profile(params: GalaxyParams) -> Callable[[np.ndarray], np.ndarray]:
    """The disk's unreddened H-alpha surface brightness at in-plane radius (arcsec)."""
    scale_length = params.re_arcsec / 1.678
    disk = params.disk
    if disk.ring_radius_re > 0:
        ring = disk.ring_radius_re * params.re_arcsec
        width = 0.2 * params.re_arcsec
        return lambda radius: (
            disk.ha_peak
            * (np.exp(-0.5 * ((radius - ring) / width) ** 2) + 0.1 * np.exp(-radius / scale_length))
        )
    return lambda radius: disk.ha_peak * np.exp(-radius / scale_length)


def _emission_lines(
    params: GalaxyParams,
    ha_intrinsic: np.ndarray,
    ratios: dict[str, np.ndarray],
    reddening: Callable[[str], np.ndarray],
) -> dict[str, np.ndarray]:
    """Every line of gas with unreddened H-alpha ``ha_intrinsic`` and log10 ``ratios``."""
    hb_intrinsic = ha_intrinsic / CASE_B_HALPHA_HBETA
    lines: dict[str, np.ndarray] = {}
    lines["Ha-6564"] = ha_intrinsic * reddening("Ha-6564")
    lines["Hb-4862"] = hb_intrinsic * reddening("Hb-4862")
    for line, ratio in BALMER_TO_HBETA.items():
        lines[line] = hb_intrinsic * ratio * reddening(line)
    for line, ratio in HELIUM_I_TO_HBETA.items():
        lines[line] = hb_intrinsic * ratio * reddening(line)
    # BPT lines: ratios on observed fluxes of their neighbouring Balmer line.
    lines["NII-6585"] = lines["Ha-6564"] * 10.0 ** ratios["nii_ha"]
    lines["OIII-5008"] = lines["Hb-4862"] * 10.0 ** ratios["oiii_hb"]
    sii = lines["Ha-6564"] * 10.0 ** ratios["sii_ha"]
    lines["SII-6718"] = sii * (params.sii_doublet_ratio / (1.0 + params.sii_doublet_ratio))
    lines["SII-6732"] = sii / (1.0 + params.sii_doublet_ratio)
    lines["OI-6302"] = lines["Ha-6564"] * 10.0 ** ratios["oi_ha"]
    # The others: intrinsic ratios to Hb, each reddened at its own wavelength.
    lines["HeII-4687"] = hb_intrinsic * 10.0 ** ratios["heii_hb"] * reddening("HeII-4687")
    oii = hb_intrinsic * 10.0 ** ratios["oii_hb"]
    lines["OII-3727"] = oii / (1 + OII_3729_TO_3727) * reddening("OII-3727")
    lines["OII-3729"] = oii * OII_3729_TO_3727 / (1 + OII_3729_TO_3727) * reddening("OII-3729")
    neiii = hb_intrinsic * 10.0 ** (ratios["oiii_hb"] + ratios["neiii_oiii"])
    lines["NeIII-3869"] = neiii * reddening("NeIII-3869")
    ni = hb_intrinsic * 10.0 ** ratios["ni_hb"]
    lines["NI-5199"] = ni * NI_5199_FRACTION * reddening("NI-5199")
    lines["NI-5201"] = ni * (1 - NI_5199_FRACTION) * reddening("NI-5201")
    lines["ArIII-7137"] = hb_intrinsic * 10.0 ** ratios["ariii_hb"] * reddening("ArIII-7137")
    lines["SIII-9533"] = hb_intrinsic * 10.0 ** ratios["siii_hb"] * reddening("SIII-9533")
    for weak, (strong, ratio) in PHYSICAL_DOUBLET_RATIOS.items():
        lines[weak] = lines[strong] * ratio * reddening(weak) / reddening(strong)
    missing = set(REST_WAVELENGTHS) - set(lines)
    if missing:
        raise RuntimeError(f"physics model lacks lines {sorted(missing)}")
    return lines


@dataclass(frozen=True)
class _IonisedGas:
    """H-alpha of the realistic world's two gas phases (unreddened)."""

    hii: np.ndarray  # HII complexes, the smooth floor of faint HII regions
    dig: np.ndarray  # diffuse ionised gas


def _realistic_gas(params: GalaxyParams, grid: MapGrid, coords: DiskCoordinates) -> _IonisedGas:
    """Split the disk into PSF-sized HII complexes, a smooth HII floor and extended DIG."""
    texture = params.texture
    assert texture is not None
    scale_length = params.re_arcsec / 1.678
    profile = _disk_profile(params)
    r_max = max(6.0 * scale_length, 2.0 * params.disk.ring_radius_re * params.re_arcsec)
    rng = np.random.default_rng(texture.seed)
    x, y = clump_positions(texture, rng, profile, r_max)
    hii_share = 1.0 - texture.dig_share
    clump_total = hii_share * texture.clump_share * profile_total(profile, r_max, params.axis_ratio)
    # The lopsided side of the disk holds the brighter complexes.
    lopsided = 1.0 + texture.lopsidedness * np.cos(np.arctan2(y, x) - texture.lopsided_phase)
    luminosity = clump_luminosities(texture, rng, 1.0) * lopsided
    luminosity *= clump_total / luminosity.sum()
    clumps = render_clumps(grid, x, y, luminosity, params.axis_ratio, params.position_angle)
    modulation = disk_modulation(texture, coords.radius, coords.azimuth, r_max / 6)
    floor = hii_share * (1.0 - texture.clump_share) * profile(coords.radius) * modulation
    # The DIG's share is set at the centre, where the disk (or a ring's inner disk) starts.
    dig = (
        texture.dig_share
        * float(profile(np.zeros(())))
        * np.exp(-coords.radius / (texture.dig_scale * scale_length))
    )
    return _IonisedGas(hii=clumps + floor, dig=dig)


def _nuclei_halpha(params: GalaxyParams, grid: MapGrid) -> np.ndarray | float:
    ha: np.ndarray | float = 0.0
    for nucleus in params.nuclei:
        distance2 = (grid.x - nucleus.offset_arcsec[0]) ** 2 + (
            grid.y - nucleus.offset_arcsec[1]
        ) ** 2
        ha = ha + nucleus.ha_peak * np.exp(-distance2 / (2 * PSF_SIGMA_ARCSEC**2))
    return ha


def _central_window(size: int) -> tuple[slice, slice]:
    """The central 2x2 spaxels of a square map."""
    centre = size // 2
    return (slice(centre - 1, centre + 1), slice(centre - 1, centre + 1))


def _flatten_ratios(lines: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
    """Every line the shape of H-alpha, ``factor`` times brighter, at its central ratio to it.

    The central ratios are kept, so the galaxy keeps its class; only the maps turn flat.
    """
    ha = lines["Ha-6564"]
    window = _central_window(ha.shape[-1])
    ha_centre = float(np.sum(ha[window], dtype=np.float64))
    return {
        name: ha * (factor * float(np.sum(line[window], dtype=np.float64)) / ha_centre)
        for name, line in lines.items()
    }


def model_galaxy(params: GalaxyParams) -> GalaxyModel:
    """The noise-free model of ``params`` on its MAPS grid."""
    grid = map_grid(params.ifu_size)
    coords = disk_coordinates(grid, params.axis_ratio, params.position_angle, (0.0, 0.0))
    radius_re = coords.radius / np.float32(params.re_arcsec)
    ratios, weights = _blend_ratios(params, grid, coords)
    ebv = params.ebv_centre * np.maximum(0.1, 1.0 - params.ebv_gradient * radius_re)
    oddity = params.oddity
    star = failed = None
    if oddity is not None and oddity.kind == "dust_lane":
        across_sky = coords.radius * np.sin(coords.azimuth) * np.float32(params.axis_ratio)
        lane = dust_lane_ebv(oddity, across_sky)
        ebv = ebv + lane
        # Where the lane hides H-alpha by more than 2 magnitudes the DAP's fit fails.
        failed = grid.footprint & (lane > DUST_LANE_FAILED_EBV)
    elif oddity is not None and oddity.kind == "foreground_star":
        star = grid.footprint & foreground_star(oddity, grid)

    def reddening(line: str) -> np.ndarray:
        return 10.0 ** (-0.4 * float(cardelli_k(REST_WAVELENGTHS[line])) * ebv)

    if params.texture is None:
        ha_intrinsic = _disk_profile(params)(coords.radius)
        for nucleus in params.nuclei:
            distance2 = (grid.x - nucleus.offset_arcsec[0]) ** 2 + (
                grid.y - nucleus.offset_arcsec[1]
            ) ** 2
            ha_intrinsic = ha_intrinsic + nucleus.ha_peak * np.exp(
                -distance2 / (2 * PSF_SIGMA_ARCSEC**2)
            )
        lines = _emission_lines(params, ha_intrinsic, ratios, reddening)
    else:
        gas = _realistic_gas(params, grid, coords)
        hii_lines = _emission_lines(
            params, gas.hii + _nuclei_halpha(params, grid), ratios, reddening
        )
        # The DIG's ratios sit above the HII regions' by its offsets, except where a nucleus
        # sets the ratios.
        disk_weight = 1.0 - np.sum(weights, axis=0) if weights else 1.0
        dig_ratios = {
            key: value + disk_weight * params.texture.dig_offsets.get(key, 0.0)
            for key, value in ratios.items()
        }
        dig_lines = _emission_lines(params, gas.dig, dig_ratios, reddening)
        lines = {name: hii_lines[name] + dig_lines[name] for name in hii_lines}
    if oddity is not None and oddity.kind == "flat_ratios":
        lines = _flatten_ratios(lines, oddity.strength)
    if params.anomaly_kind == "misaligned_line":
        # Gas of this line lies across H-alpha's: its map turned by 90 degrees about the galaxy
        # centre, which is the centre of the square map. Real morphology, so noise comes later.
        lines[params.anomaly_line] = np.rot90(lines[params.anomaly_line]).copy()
    lines = {name: lines[name].astype(np.float32) for name in REST_WAVELENGTHS}
    if params.texture is None and oddity is None:
        centre = _planted_centre_ratios(params)
    else:
        centre = _measured_centre_ratios(params, lines)

    continuum = params.continuum_peak * np.exp(
        -(2 * params.sersic_n - 1 / 3)
        * (np.sqrt(coords.radius**2 + 0.25) / params.re_arcsec) ** (1 / params.sersic_n)
    )
    sin_i = np.sin(np.deg2rad(params.inclination))
    rotation = params.vmax * np.tanh(coords.radius / params.turnover_arcsec) * sin_i
    gas_velocity = rotation * np.cos(coords.azimuth)
    gas_sigma = params.gas_sigma + sum(
        w * nucleus.sigma_kms for w, nucleus in zip(weights, params.nuclei, strict=True)
    )
    stellar_sigma = params.stellar_sigma * (1.0 + radius_re) ** -0.4
    return GalaxyModel(
        grid=grid,
        coords=coords,
        lines=lines,
        ebv=ebv.astype(np.float32),
        continuum=continuum.astype(np.float32),
        gas_velocity=gas_velocity.astype(np.float32),
        stellar_velocity=(0.75 * gas_velocity).astype(np.float32),
        gas_sigma=(gas_sigma * np.ones_like(radius_re)).astype(np.float32),
        stellar_sigma=stellar_sigma.astype(np.float32),
        centre_ratios=centre,
        foreground_star=star,
        fit_failed=failed,
    )


@dataclass(frozen=True)
class EmissionLineMaps:
    """The EMLINE_GFLUX, _IVAR and _MASK content of one MAPS file.

    Attributes
    ----------
    channels : tuple of str
        Channel names in file order.
    flux : numpy.ndarray
        (nchannel, n, n) float32, 1E-17 erg/s/cm^2/spaxel; 0 where IVAR is 0.
    ivar : numpy.ndarray
        (nchannel, n, n) float32, (1E-17 erg/s/cm^2/spaxel)^-2.
    mask : numpy.ndarray
        (nchannel, n, n) int32 MANGA_DAPPIXMASK.
    truth : numpy.ndarray
        (nchannel, n, n) float32 noise-free flux, with the DAP version's ties applied.
    """

    channels: tuple[str, ...]
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    truth: np.ndarray

    def channel(self, name: str) -> int:
        """0-based index of channel ``name``."""
        return self.channels.index(name)


def correlated_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    correlation_sigma: float = NOISE_CORRELATION_SIGMA,
) -> np.ndarray:
    """Unit-variance Gaussian noise maps whose spaxels correlate as exp(-D^2 / (2 sigma^2)).

    Parameters
    ----------
    rng : numpy.random.Generator
        Noise source.
    shape : (int, int, int)
        (maps, ny, nx); every map is an independent field.
    correlation_sigma : float, optional
        Correlation length in spaxels; 0 gives independent (white) noise.

    Returns
    -------
    numpy.ndarray
        float32 noise of the given shape, standard deviation 1 in every spaxel.

    Notes
    -----
    White noise convolved with a Gaussian of width sigma / sqrt(2) has a Gaussian
    autocorrelation of width sigma. The kernel is normalised to unit sum of squares, so the
    variance stays 1, and the white field is drawn ``radius`` spaxels larger on every side and
    cropped, so edge spaxels average as many draws as central ones. The convolution is separable
    and done tap by tap (15 taps for MaNGA), in a fixed order, so every machine writes the same
    bytes, which a BLAS matrix product would not promise.
    """
    if correlation_sigma < 0:
        raise ValueError(f"correlation_sigma must be >= 0 spaxels, got {correlation_sigma!r}")
    n_maps, ny, nx = shape
    if correlation_sigma == 0:
        return rng.standard_normal(shape, dtype=np.float32)
    kernel_sigma = correlation_sigma / np.sqrt(2.0)
    # Beyond 4.5 kernel widths the kernel is below 1e-4 of its peak.
    radius = int(np.ceil(4.5 * kernel_sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2.0 * kernel_sigma**2))
    kernel /= np.sqrt(np.sum(kernel**2))
    white = rng.standard_normal((n_maps, ny + 2 * radius, nx + 2 * radius), dtype=np.float32)
    kernel = kernel.astype(np.float32)
    along_rows = sum(weight * white[:, tap : tap + ny, :] for tap, weight in enumerate(kernel))
    field = sum(weight * along_rows[:, :, tap : tap + nx] for tap, weight in enumerate(kernel))
    return field


def noise_sigma_factor(observed_wavelength: float) -> float:
    """Line-flux noise relative to Ha's: worse in the blue (throughput) and far red (sky)."""
    blue = max(0.0, (4300.0 - observed_wavelength) / 500.0)
    red = 0.6 if observed_wavelength > 8500.0 else 0.0
    return 1.0 + blue + red


def observe_lines(
    params: GalaxyParams,
    model: GalaxyModel,
    channels: tuple[str, ...],
    dapver: str,
    rng: np.random.Generator,
) -> EmissionLineMaps:
    """Noisy Gaussian-fit line maps as the DAP would report them.

    Parameters
    ----------
    params : GalaxyParams
        The galaxy (noise level, redshift, planted anomaly).
    model : GalaxyModel
        Its noise-free maps.
    channels : tuple of str
        Channel names of the DAP version, in file order.
    dapver : str
        DAP version, for the tied doublet ratios.
    rng : numpy.random.Generator
        Noise source.

    Notes
    -----
    Flux = truth + N(0, 1/sqrt(IVAR)) inside the footprint, the noise of neighbouring spaxels
    correlated as in MaNGA (:func:`correlated_noise`). Outside it IVAR and flux are 0 and the
    mask is NOCOV | DONOTUSE. Where a fit failed IVAR and flux are 0 and the mask is MATHERROR |
    DONOTUSE; lines redshifted beyond the spectrum get NOVALUE | DONOTUSE. A few percent of
    values are flagged UNRELIABLE but kept. Lines tied by the DAP are exactly ratio x the strong
    line, with IVAR / ratio^2 and the strong line's mask.
    """
    tied = TIED_FLUX_RATIOS[dapver]
    grid = model.grid
    footprint = grid.footprint
    n_channels, size = len(channels), grid.size
    truth = np.stack([model.lines[name] for name in channels])
    for weak, (strong, ratio) in tied.items():
        if weak in channels and strong in channels:
            truth[channels.index(weak)] = np.float32(ratio) * truth[channels.index(strong)]

    # Noise grows with the continuum under the line (photon noise of the galaxy).
    continuum_term = np.sqrt(1.0 + model.continuum / 2.0)
    sigma = np.empty((n_channels, size, size), dtype=np.float32)
    observed = np.empty(n_channels, dtype=bool)
    for index, name in enumerate(channels):
        observed_wave = REST_WAVELENGTHS[name] * (1.0 + params.z)
        sigma[index] = params.ha_noise * noise_sigma_factor(observed_wave) * continuum_term
        observed[index] = observed_wave < SPECTRUM_RED_END_ANGSTROM

    noise = correlated_noise(rng, (n_channels, size, size))
    flux = truth + sigma * noise
    ivar = 1.0 / sigma**2
    mask = np.zeros((n_channels, size, size), dtype=np.int32)

    failed = footprint & (rng.uniform(size=(size, size)) < FAILED_FIT_FRACTION)
    unreliable = rng.uniform(size=(n_channels, size, size)) < UNRELIABLE_FRACTION
    mask[:, failed] = _FAILED
    ivar[:, failed] = 0.0
    mask[~observed] = np.where(footprint, _NOVALUE, 0)
    ivar[~observed] = 0.0

    if params.anomaly_kind == "missing_line" and params.anomaly_line in channels:
        index = channels.index(params.anomaly_line)
        ivar[index] = 0.0
        mask[index] = _FAILED
    elif params.anomaly_kind == "garbled_line" and params.anomaly_line in channels:
        index = channels.index(params.anomaly_line)
        values = flux[index][footprint]
        flux[index][footprint] = rng.permutation(values) * np.float32(rng.uniform(2.0, 4.0))

    if model.fit_failed is not None:
        mask[:, model.fit_failed] = _FAILED
        ivar[:, model.fit_failed] = 0.0
    if model.foreground_star is not None:
        mask[:, model.foreground_star] = _FORESTAR
        ivar[:, model.foreground_star] = 0.0
    mask[:, ~footprint] = _NOCOV
    ivar[:, ~footprint] = 0.0
    mask |= np.where(unreliable & (ivar > 0), _UNRELIABLE, 0).astype(np.int32)
    flux[ivar == 0] = 0.0

    for weak, (strong, ratio) in tied.items():
        if weak in channels and strong in channels:
            w, s = channels.index(weak), channels.index(strong)
            flux[w] = np.float32(ratio) * flux[s]
            ivar[w] = ivar[s] / np.float32(ratio) ** 2
            mask[w] = mask[s]
    return EmissionLineMaps(
        channels=channels, flux=flux, ivar=ivar.astype(np.float32), mask=mask, truth=truth
    )


def systemic_velocity(params: GalaxyParams) -> float:
    """cz of the galaxy, km/s (the DAP's SCINPVEL)."""
    return params.z * SPEED_OF_LIGHT_KMS
