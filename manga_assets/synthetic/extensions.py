"""Channels, units and content of every MAPS extension besides the emission-line fluxes.

The pipeline reads only EMLINE_GFLUX, _IVAR and _MASK, but a realistic file must hold the other
extensions too, with plausible, non-constant values: they set the file size and the cost of
decompressing down to the flux extensions, which sit about halfway through the file. Values are
physically motivated (stellar continuum, rotation, dispersion, line equivalent widths, Lick-like
spectral indices) with noise, zero (and masked NOCOV) outside the IFU footprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from manga_assets.dap.datamodel import (
    FLUX_BUNIT,
    FLUX_EXTENSION,
    IVAR_BUNIT,
    IVAR_EXTENSION,
    MAPS_EXTENSIONS,
    MASK_EXTENSION,
    REST_WAVELENGTHS,
    SPAXEL_ARCSEC,
    SPEED_OF_LIGHT_KMS,
    mask_value,
)
from manga_assets.synthetic.cosmology import angular_diameter_distance_mpc
from manga_assets.synthetic.physics import EmissionLineMaps, GalaxyModel, continuum_shape
from manga_assets.synthetic.population import GalaxyParams

CONTINUUM_BUNIT = "1E-17 erg/s/cm^2/ang/spaxel"
CONTINUUM_IVAR_BUNIT = "(1E-17 erg/s/cm^2/ang/spaxel)^{-2}"

BINID_CHANNELS = (
    "Binned spectra",
    "Stellar continua",
    "Em. line moments",
    "Em. line models",
    "Spectral indices",
)
FOM_CHANNELS = (
    "rms",
    "frms",
    "rchi2",
    "68th perc frac resid",
    "99th perc frac resid",
    "max frac resid",
    "68th perc per pix chi",
    "99th perc per pix chi",
    "max per pix chi",
)
FOM_UNITS = (CONTINUUM_BUNIT,) + ("",) * 8

# Spectral indices: (name, unit, value of a young population, value of an old one).
SPECTRAL_INDICES: tuple[tuple[str, str, float, float], ...] = (
    ("CN1", "mag", -0.05, 0.10), ("CN2", "mag", 0.0, 0.13), ("Ca4227", "ang", 0.5, 1.2),
    ("G4300", "ang", 2.0, 5.5), ("Fe4383", "ang", 2.0, 5.0), ("Ca4455", "ang", 0.8, 1.5),
    ("Fe4531", "ang", 2.3, 3.5), ("C24668", "ang", 3.0, 7.0), ("Hb", "ang", 3.5, 1.6),
    ("Fe5015", "ang", 4.0, 5.5), ("Mg1", "mag", 0.03, 0.13), ("Mg2", "mag", 0.10, 0.28),
    ("Mgb", "ang", 2.0, 4.5), ("Fe5270", "ang", 2.0, 3.0), ("Fe5335", "ang", 1.8, 2.8),
    ("Fe5406", "ang", 1.0, 1.8), ("Fe5709", "ang", 0.6, 1.0), ("Fe5782", "ang", 0.5, 0.9),
    ("NaD", "ang", 1.5, 4.5), ("TiO1", "mag", 0.02, 0.05), ("TiO2", "mag", 0.04, 0.09),
    ("HDeltaA", "ang", 5.0, -2.0), ("HGammaA", "ang", 3.0, -5.5), ("HDeltaF", "ang", 4.0, 0.5),
    ("HGammaF", "ang", 3.0, -1.5), ("CaHK", "ang", 12.0, 20.0), ("CaII1", "ang", 0.8, 1.2),
    ("CaII2", "ang", 2.5, 3.8), ("CaII3", "ang", 2.0, 3.0), ("Pa17", "ang", 0.3, 0.6),
    ("Pa14", "ang", 0.2, 0.5), ("Pa12", "ang", 0.3, 0.6), ("MgICvD", "ang", 0.4, 0.7),
    ("NaICvD", "ang", 0.4, 0.9), ("MgIIR", "ang", 0.3, 0.5), ("FeHCvD", "ang", 0.2, 0.4),
    ("NaI", "ang", 0.5, 1.0), ("bTiO", "mag", 0.01, 0.03), ("aTiO", "mag", 0.005, 0.02),
    ("CaH1", "mag", 0.005, 0.02), ("CaH2", "mag", 0.02, 0.05), ("NaISDSS", "ang", 1.5, 3.5),
    ("TiO2SDSS", "mag", 0.03, 0.07), ("D4000", "", 1.3, 2.0), ("Dn4000", "", 1.15, 1.9),
    ("TiOCvD", "", 1.0, 1.06),
)  # fmt: skip
SPECINDEX_CHANNELS = tuple(name for name, *_ in SPECTRAL_INDICES)
SPECINDEX_UNITS = tuple(unit for _, unit, *_ in SPECTRAL_INDICES)

# Summed-flux (moment) channels whose passband another line's covers; the DAP leaves them empty.
EMPTY_MOMENT_CHANNELS = frozenset({"OII-3729", "HeI-3889", "NeIII-3968", "NI-5201"})

_NOCOV = mask_value(["NOCOV", "DONOTUSE"])
_NOVALUE = mask_value(["NOVALUE", "DONOTUSE"])
_DONOTUSE = mask_value(["DONOTUSE"])


@dataclass(frozen=True)
class ExtensionSpec:
    """Header facts of one MAPS extension.

    Attributes
    ----------
    name : str
        EXTNAME.
    channels : tuple of str or None
        Channel names (C01..Cnn keywords) of a (nchannel, ny, nx) extension; None for 2-D maps.
    bunit : str or None
        BUNIT.
    channel_units : tuple of str or None
        Per-channel units (U01..Unn keywords) where channels differ in unit.
    integer : bool
        int32 data (BINID, masks) rather than float32.
    """

    name: str
    channels: tuple[str, ...] | None = None
    bunit: str | None = None
    channel_units: tuple[str, ...] | None = None
    integer: bool = False


def _moment_channels(emline_channels: tuple[str, ...]) -> tuple[str, ...]:
    # The moment (summed-flux) list measures the [OII] doublet as one band.
    return tuple("OIId-3728" if name == "OII-3727" else name for name in emline_channels)


def extension_specs(dapver: str, emline_channels: tuple[str, ...]) -> dict[str, ExtensionSpec]:
    """Header facts of every extension that DAP version ``dapver`` writes, by EXTNAME."""
    lines = emline_channels
    moments = _moment_channels(lines)
    dr17 = dapver != "2.2.1"
    specs = [
        ExtensionSpec("SPX_SKYCOO", ("On-sky X", "On-sky Y"), "arcsec"),
        ExtensionSpec(
            "SPX_ELLCOO",
            ("Elliptical radius", "R/R_e", "R h/kpc", "Elliptical azimuth")
            if dr17
            else ("Elliptical radius", "R/R_e", "Elliptical azimuth"),
            None,
            ("arcsec", "", "kpc/h", "degrees") if dr17 else ("arcsec", "", "degrees"),
        ),
        ExtensionSpec("SPX_MFLUX", None, CONTINUUM_BUNIT),
        ExtensionSpec("SPX_MFLUX_IVAR", None, CONTINUUM_IVAR_BUNIT),
        ExtensionSpec("SPX_SNR"),
        ExtensionSpec("BINID", BINID_CHANNELS, integer=True),
        # The reference lists the luminosity-weighted bin coordinates as single-channel maps.
        ExtensionSpec("BIN_LWSKYCOO", None, "arcsec"),
        ExtensionSpec("BIN_LWELLCOO", None, "arcsec"),
        ExtensionSpec("BIN_AREA", None, "arcsec^2"),
        ExtensionSpec("BIN_FAREA"),
        ExtensionSpec("BIN_MFLUX", None, CONTINUUM_BUNIT),
        ExtensionSpec("BIN_MFLUX_IVAR", None, CONTINUUM_IVAR_BUNIT),
        ExtensionSpec("BIN_MFLUX_MASK", integer=True),
        ExtensionSpec("BIN_SNR"),
        ExtensionSpec("STELLAR_VEL", None, "km/s"),
        ExtensionSpec("STELLAR_VEL_IVAR", None, "(km/s)^{-2}"),
        ExtensionSpec("STELLAR_VEL_MASK", integer=True),
        ExtensionSpec("STELLAR_SIGMA", None, "km/s"),
        ExtensionSpec("STELLAR_SIGMA_IVAR", None, "(km/s)^{-2}"),
        ExtensionSpec("STELLAR_SIGMA_MASK", integer=True),
        ExtensionSpec("STELLAR_SIGMACORR", None, "km/s"),
        ExtensionSpec("STELLAR_FOM", FOM_CHANNELS, None, FOM_UNITS),
        ExtensionSpec("STELLAR_CONT_FRESID", ("68th percentile", "99th percentile")),
        ExtensionSpec("STELLAR_CONT_RCHI2"),
        ExtensionSpec("EMLINE_SFLUX", moments, FLUX_BUNIT),
        ExtensionSpec("EMLINE_SFLUX_IVAR", moments, IVAR_BUNIT),
        ExtensionSpec("EMLINE_SFLUX_MASK", moments, integer=True),
        ExtensionSpec("EMLINE_SEW", moments, "ang"),
        ExtensionSpec("EMLINE_SEW_CNT", moments, CONTINUUM_BUNIT),
        ExtensionSpec("EMLINE_SEW_IVAR", moments, "(ang)^{-2}"),
        ExtensionSpec("EMLINE_SEW_MASK", moments, integer=True),
        ExtensionSpec(FLUX_EXTENSION, lines, FLUX_BUNIT),
        ExtensionSpec(IVAR_EXTENSION, lines, IVAR_BUNIT),
        ExtensionSpec(MASK_EXTENSION, lines, integer=True),
        ExtensionSpec("EMLINE_GEW", lines, "ang"),
        ExtensionSpec("EMLINE_GEW_CNT", lines, CONTINUUM_BUNIT),
        ExtensionSpec("EMLINE_GEW_IVAR", lines, "(ang)^{-2}"),
        ExtensionSpec("EMLINE_GEW_MASK", lines, integer=True),
        ExtensionSpec("EMLINE_GVEL", lines, "km/s"),
        ExtensionSpec("EMLINE_GVEL_IVAR", lines, "(km/s)^{-2}"),
        ExtensionSpec("EMLINE_GVEL_MASK", lines, integer=True),
        ExtensionSpec("EMLINE_GSIGMA", lines, "km/s"),
        ExtensionSpec("EMLINE_GSIGMA_IVAR", lines, "(km/s)^{-2}"),
        ExtensionSpec("EMLINE_GSIGMA_MASK", lines, integer=True),
        ExtensionSpec("EMLINE_INSTSIGMA", lines, "km/s"),
        ExtensionSpec("EMLINE_TPLSIGMA", lines, "km/s"),
        ExtensionSpec("EMLINE_GA", lines, CONTINUUM_BUNIT),
        ExtensionSpec("EMLINE_GANR", lines),
        ExtensionSpec("EMLINE_FOM", FOM_CHANNELS, None, FOM_UNITS),
        ExtensionSpec("EMLINE_LFOM", lines),
    ]
    for family in ("SPECINDEX", "SPECINDEX_BF", "SPECINDEX_WGT"):
        units = SPECINDEX_UNITS if family != "SPECINDEX_WGT" else None
        bunit = CONTINUUM_BUNIT if family == "SPECINDEX_WGT" else None
        specs += [
            ExtensionSpec(family, SPECINDEX_CHANNELS, bunit, units),
            ExtensionSpec(f"{family}_IVAR", SPECINDEX_CHANNELS),
            ExtensionSpec(f"{family}_MASK", SPECINDEX_CHANNELS, integer=True),
            ExtensionSpec(f"{family}_CORR", SPECINDEX_CHANNELS, None, units),
            ExtensionSpec(f"{family}_MODEL", SPECINDEX_CHANNELS, bunit, units),
        ]
    by_name = {spec.name: spec for spec in specs}
    return {name: by_name[name] for name in MAPS_EXTENSIONS[dapver]}


def kpc_per_arcsec(z: float) -> float:
    """Angular scale at redshift ``z`` for H0 = 100 h km/s/Mpc, Omega_m = 0.3 (DAPall), kpc/h."""
    return angular_diameter_distance_mpc(z) * 1000.0 * np.pi / (180.0 * 3600.0)


class MapsContent:
    """Lazily computed data of every extension of one galaxy's MAPS file.

    Parameters
    ----------
    params : GalaxyParams
        The galaxy.
    model : GalaxyModel
        Its noise-free maps.
    lines : EmissionLineMaps
        Its EMLINE_GFLUX content.
    rng : numpy.random.Generator
        Noise source for everything but the line fluxes.
    """

    def __init__(
        self,
        params: GalaxyParams,
        model: GalaxyModel,
        lines: EmissionLineMaps,
        rng: np.random.Generator,
    ) -> None:
        self.params = params
        self.model = model
        self.lines = lines
        self.rng = rng
        self.footprint = model.grid.footprint
        self.size = model.grid.size
        self.cov_mask = np.where(self.footprint, 0, _NOCOV).astype(np.int32)

    # -- helpers ------------------------------------------------------------------------------

    def _noise(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32)

    def _in_footprint(self, data: np.ndarray) -> np.ndarray:
        return np.where(self.footprint, data, np.float32(0.0)).astype(np.float32)

    def _mask_like(self, n_channels: int | None) -> np.ndarray:
        if n_channels is None:
            return self.cov_mask.copy()
        return np.broadcast_to(self.cov_mask, (n_channels, self.size, self.size)).copy()

    @cached_property
    def _line_waves(self) -> np.ndarray:
        return np.array([REST_WAVELENGTHS[name] for name in self.lines.channels])

    @cached_property
    def _line_continuum(self) -> np.ndarray:
        """Continuum under each line, (nchannel, n, n), 1E-17 erg/s/cm^2/ang/spaxel."""
        shape = continuum_shape(self._line_waves).astype(np.float32)
        return self._in_footprint(shape[:, None, None] * self.model.continuum[None])

    # -- spaxel coordinates and continuum --------------------------------------------------------

    @cached_property
    def continuum_sigma(self) -> np.ndarray:
        return 0.03 * self.model.continuum + np.float32(0.01)

    @cached_property
    def spx_mflux(self) -> np.ndarray:
        noise = self._noise((self.size, self.size)) * self.continuum_sigma
        return self._in_footprint(self.model.continuum + noise)

    @cached_property
    def spx_snr(self) -> np.ndarray:
        return self._in_footprint(self.spx_mflux / self.continuum_sigma)

    def ellcoo(self, n_channels: int) -> np.ndarray:
        radius = self.model.coords.radius
        azimuth = np.rad2deg(self.model.coords.azimuth) % 360.0
        planes = [radius, radius / np.float32(self.params.re_arcsec)]
        if n_channels == 4:
            planes.append(radius * np.float32(kpc_per_arcsec(self.params.z)))
        planes.append(azimuth)
        return np.stack(planes).astype(np.float32)

    # -- binning (stellar kinematics on S/N~10 bins, lines per spaxel: HYB10) --------------------

    @cached_property
    def bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stellar bin of each spaxel (-1 outside), spaxels per bin, and each spaxel's index."""
        rows, cols = np.mgrid[0 : self.size, 0 : self.size]
        snr = self.spx_snr
        block = np.where(snr >= 10, 1, np.where(snr >= 3, 2, 4))
        key = (block * 10_000 + (rows // block) * 100 + cols // block).astype(np.int64)
        key = np.where(self.footprint, key, -1)
        _, labels = np.unique(key, return_inverse=True)
        labels = labels.reshape(self.size, self.size) - (1 if (~self.footprint).any() else 0)
        counts = np.bincount(labels[self.footprint], minlength=labels.max() + 1)
        spaxel = np.full((self.size, self.size), -1, dtype=np.int64)
        spaxel[self.footprint] = np.arange(int(self.footprint.sum()))
        return labels.astype(np.int32), counts, spaxel.astype(np.int32)

    def bin_mean(self, values: np.ndarray) -> np.ndarray:
        labels, counts, _ = self.bins
        sums = np.bincount(labels[self.footprint], weights=values[self.footprint])
        mean = np.zeros((self.size, self.size), dtype=np.float32)
        mean[self.footprint] = (sums / np.maximum(counts, 1))[labels[self.footprint]]
        return mean

    @cached_property
    def bin_count_map(self) -> np.ndarray:
        labels, counts, _ = self.bins
        return self._in_footprint(counts[np.maximum(labels, 0)].astype(np.float32))

    @cached_property
    def binid(self) -> np.ndarray:
        labels, _, spaxel = self.bins
        return np.stack([labels, labels, spaxel, spaxel, spaxel]).astype(np.int32)

    @cached_property
    def bin_mflux(self) -> np.ndarray:
        noise = self._noise((self.size, self.size)) * self.continuum_sigma
        return self._in_footprint(
            self.bin_mean(self.model.continuum) + noise / np.sqrt(self.bin_count_map + 1e-6)
        )

    @cached_property
    def bin_mflux_ivar(self) -> np.ndarray:
        return self._in_footprint(self.bin_count_map / self.continuum_sigma**2)

    def _kinematic(self, truth: np.ndarray, error_at_snr10: float) -> tuple[np.ndarray, ...]:
        """Bin-averaged map with noise and its IVAR; the error falls with the bin's S/N."""
        snr = np.maximum(self.bin_mean(self.spx_snr) * np.sqrt(self.bin_count_map), 1.0)
        error = np.float32(error_at_snr10) * 10.0 / snr
        value = self.bin_mean(truth) + error * self._noise((self.size, self.size))
        return self._in_footprint(value), self._in_footprint(1.0 / error**2)

    @cached_property
    def stellar_velocity(self) -> tuple[np.ndarray, ...]:
        return self._kinematic(self.model.stellar_velocity, 12.0)

    @cached_property
    def stellar_sigma(self) -> tuple[np.ndarray, ...]:
        value, ivar = self._kinematic(self.model.stellar_sigma, 15.0)
        return np.abs(value), ivar

    def fom(self) -> np.ndarray:
        """Figures of merit of a fit: rms (flux units), then dimensionless residual statistics."""
        scales = np.array([1.0, 0.03, 1.0, 0.02, 0.08, 0.2, 0.9, 2.8, 5.0], dtype=np.float32)
        value = scales[:, None, None] * np.abs(1.0 + 0.15 * self._noise((9, self.size, self.size)))
        value[0] *= self.continuum_sigma
        return self._in_footprint(value)

    # -- emission lines -------------------------------------------------------------------------

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Summed (moment) fluxes, IVAR and mask; the [OII] doublet in one band."""
        lines = self.lines
        ivar = lines.ivar / np.float32(1.44)  # moments are noisier than Gaussian fits
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.maximum(ivar, 1e-30)), 0.0)
        flux = lines.truth + sigma.astype(np.float32) * self._noise(lines.flux.shape)
        mask = lines.mask.copy()
        oii = lines.channel("OII-3727")
        flux[oii] = (
            lines.truth[oii]
            + lines.truth[lines.channel("OII-3729")]
            + sigma[oii] * (self._noise((self.size, self.size)))
        )
        for index, name in enumerate(lines.channels):
            if name in EMPTY_MOMENT_CHANNELS:
                flux[index] = 0.0
                ivar[index] = 0.0
                mask[index] = np.where(self.footprint, _NOVALUE, _NOCOV)
        flux = np.where(ivar > 0, flux, np.float32(0.0)).astype(np.float32)
        return flux, ivar.astype(np.float32), mask

    def _equivalent_width(
        self, flux: np.ndarray, ivar: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        continuum = self._line_continuum * (1.0 + 0.01 * self._noise(self._line_continuum.shape))
        continuum = np.where(self.footprint, np.maximum(continuum, 1e-3), 0.0).astype(np.float32)
        safe = np.where(continuum > 0, continuum, 1.0)
        ew = np.where(continuum > 0, flux / safe, 0.0).astype(np.float32)
        ew_ivar = (ivar * continuum**2).astype(np.float32)
        return ew, continuum, ew_ivar

    @cached_property
    def sew(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flux, ivar, _ = self.moments
        return self._equivalent_width(flux, ivar)

    @cached_property
    def gew(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._equivalent_width(self.lines.flux, self.lines.ivar)

    @cached_property
    def line_snr(self) -> np.ndarray:
        return np.abs(self.lines.flux) * np.sqrt(self.lines.ivar)

    @cached_property
    def gvel(self) -> tuple[np.ndarray, np.ndarray]:
        # Every line's velocity is tied to Ha's, so all channels hold the same measurement.
        ha = self.lines.channel("Ha-6564")
        snr = np.maximum(self.line_snr, 0.5)
        error = self.model.gas_sigma[None] / snr
        value = self.model.gas_velocity + error[ha] * self._noise((self.size, self.size))
        velocity = np.broadcast_to(value, self.lines.flux.shape)
        good = self.lines.ivar > 0
        return (
            np.where(good, velocity, 0.0).astype(np.float32),
            np.where(good, 1.0 / error**2, 0.0).astype(np.float32),
        )

    @cached_property
    def instsigma(self) -> np.ndarray:
        observed = self._line_waves * (1.0 + self.params.z)
        resolution = 1400.0 + (observed - 3600.0) / 6700.0 * 1200.0
        per_line = (SPEED_OF_LIGHT_KMS / (2.3548 * resolution)).astype(np.float32)
        value = per_line[:, None, None] + 0.3 * self._noise(self.lines.flux.shape)
        return self._in_footprint(value)

    @cached_property
    def gsigma(self) -> tuple[np.ndarray, np.ndarray]:
        snr = np.maximum(self.line_snr, 0.5)
        error = self.model.gas_sigma[None] / snr
        value = np.abs(self.model.gas_sigma[None] + error * self._noise(self.lines.flux.shape))
        good = self.lines.ivar > 0
        return (
            np.where(good, value, 0.0).astype(np.float32),
            np.where(good, 1.0 / error**2, 0.0).astype(np.float32),
        )

    @cached_property
    def amplitude(self) -> np.ndarray:
        sigma_kms = np.sqrt(self.gsigma[0] ** 2 + self.instsigma**2)
        observed = (self._line_waves * (1.0 + self.params.z)).astype(np.float32)[:, None, None]
        sigma_ang = np.maximum(observed * sigma_kms / np.float32(SPEED_OF_LIGHT_KMS), 1e-3)
        return self._in_footprint(self.lines.flux / (np.float32(np.sqrt(2 * np.pi)) * sigma_ang))

    def per_line_positive(self, centre: float, spread: float) -> np.ndarray:
        shape = self.lines.flux.shape
        per_line = centre * (1.0 + spread * self.rng.standard_normal(shape[0]).astype(np.float32))
        value = per_line[:, None, None] * np.abs(1.0 + 0.1 * self._noise(shape))
        return self._in_footprint(value)

    # -- spectral indices -----------------------------------------------------------------------

    @cached_property
    def stellar_age_fraction(self) -> np.ndarray:
        """0 for a young population, 1 for an old one; older at the centre."""
        base = {"sf": 0.25, "composite": 0.5, "seyfert": 0.5, "liner": 0.85, "lineless": 0.9}[
            self.params.bpt_class
        ]
        radius_re = self.model.coords.radius / np.float32(self.params.re_arcsec)
        return np.clip(base + 0.15 - 0.12 * radius_re, 0.0, 1.0).astype(np.float32)

    def specindex(self, model_only: bool = False, scale: float = 1.0) -> np.ndarray:
        young = np.array([v for *_, v, _ in SPECTRAL_INDICES], dtype=np.float32)[:, None, None]
        old = np.array([v for *_, v in SPECTRAL_INDICES], dtype=np.float32)[:, None, None]
        value = young + (old - young) * self.stellar_age_fraction[None]
        if not model_only:
            error = self.specindex_error
            value = value + error * self._noise(value.shape)
        return self._in_footprint(scale * value)

    @cached_property
    def specindex_error(self) -> np.ndarray:
        typical = np.array(
            [0.01 if unit == "mag" else 0.3 if unit == "ang" else 0.03 for unit in SPECINDEX_UNITS],
            dtype=np.float32,
        )[:, None, None]
        return typical * 10.0 / np.maximum(self.spx_snr[None], 1.0)

    def specindex_corr(self) -> np.ndarray:
        # Velocity-dispersion corrections: multiplicative (about 1) for Angstrom indices,
        # additive (about 0) for magnitudes.
        multiplicative = np.array([unit != "mag" for unit in SPECINDEX_UNITS])[:, None, None]
        shape = (len(SPECINDEX_UNITS), self.size, self.size)
        spread = (self.model.stellar_sigma / 300.0)[None] * (1.0 + 0.05 * self._noise(shape))
        return self._in_footprint(np.where(multiplicative, 1.0 + 0.1 * spread, 0.01 * spread))

    def specindex_weights(self, model_only: bool = False) -> np.ndarray:
        shape = (len(SPECINDEX_UNITS), self.size, self.size)
        tilt = np.linspace(0.6, 1.1, shape[0], dtype=np.float32)[:, None, None]
        value = tilt * self.model.continuum[None]
        if not model_only:
            value = value * (1.0 + 0.02 * self._noise(shape))
        return self._in_footprint(value)

    # -- the dispatcher -------------------------------------------------------------------------

    def data(self, name: str, spec: ExtensionSpec) -> np.ndarray:
        """Data array of extension ``name``: (nchannel, n, n) or (n, n), float32 or int32."""
        n_channels = len(spec.channels) if spec.channels else None
        if name.endswith("_MASK"):
            return self._mask(name, n_channels)
        builder = _BUILDERS.get(name)
        if builder is None:
            raise KeyError(f"no synthetic content for MAPS extension {name!r}")
        data = builder(self, spec)
        dtype = np.int32 if spec.integer else np.float32
        return np.ascontiguousarray(data, dtype=dtype)

    def _mask(self, name: str, n_channels: int | None) -> np.ndarray:
        if name in (MASK_EXTENSION, "EMLINE_GEW_MASK", "EMLINE_GVEL_MASK", "EMLINE_GSIGMA_MASK"):
            return self.lines.mask
        if name in ("EMLINE_SFLUX_MASK", "EMLINE_SEW_MASK"):
            return self.moments[2]
        return self._mask_like(n_channels)


def _specindex_family(content: MapsContent, name: str) -> np.ndarray:
    # SPECINDEX_BF_IVAR -> ("SPECINDEX_BF", "IVAR"); SPECINDEX_CORR -> ("SPECINDEX", "CORR")
    parts = name.split("_")
    if len(parts) >= 2 and parts[1] in ("BF", "WGT"):
        family, part = "_".join(parts[:2]), "_".join(parts[2:])
    else:
        family, part = parts[0], "_".join(parts[1:])
    weights = family == "SPECINDEX_WGT"
    scale = 0.97 if family == "SPECINDEX_BF" else 1.0
    if part == "":
        return content.specindex_weights() if weights else content.specindex(scale=scale)
    if part == "MODEL":
        return (
            content.specindex_weights(model_only=True)
            if weights
            else content.specindex(model_only=True, scale=scale)
        )
    if part == "IVAR":
        error = content.specindex_error * (0.05 if weights else 1.0)
        return content._in_footprint(1.0 / error**2)
    if part == "CORR":
        return content.specindex_corr()
    raise KeyError(f"no synthetic content for MAPS extension {name!r}")


_BUILDERS = {
    "SPX_SKYCOO": lambda c, s: np.stack([c.model.grid.x, c.model.grid.y]),
    "SPX_ELLCOO": lambda c, s: c.ellcoo(len(s.channels)),
    "SPX_MFLUX": lambda c, s: c.spx_mflux,
    "SPX_MFLUX_IVAR": lambda c, s: c._in_footprint(1.0 / c.continuum_sigma**2),
    "SPX_SNR": lambda c, s: c.spx_snr,
    "BINID": lambda c, s: c.binid,
    "BIN_LWSKYCOO": lambda c, s: c._in_footprint(
        c.bin_mean(np.hypot(c.model.grid.x, c.model.grid.y))
    ),
    "BIN_LWELLCOO": lambda c, s: c._in_footprint(c.bin_mean(c.model.coords.radius)),
    "BIN_AREA": lambda c, s: c.bin_count_map * np.float32(SPAXEL_ARCSEC**2),
    "BIN_FAREA": lambda c, s: c._in_footprint(
        np.clip(1.0 - 0.02 * np.abs(c._noise((c.size, c.size))), 0.0, 1.0)
    ),
    "BIN_MFLUX": lambda c, s: c.bin_mflux,
    "BIN_MFLUX_IVAR": lambda c, s: c.bin_mflux_ivar,
    "BIN_SNR": lambda c, s: c._in_footprint(c.bin_mflux * np.sqrt(c.bin_mflux_ivar)),
    "STELLAR_VEL": lambda c, s: c.stellar_velocity[0],
    "STELLAR_VEL_IVAR": lambda c, s: c.stellar_velocity[1],
    "STELLAR_SIGMA": lambda c, s: c.stellar_sigma[0],
    "STELLAR_SIGMA_IVAR": lambda c, s: c.stellar_sigma[1],
    "STELLAR_SIGMACORR": lambda c, s: c._in_footprint(
        25.0 + 5.0 * c.stellar_age_fraction + 0.5 * c._noise((c.size, c.size))
    ),
    "STELLAR_FOM": lambda c, s: c.fom(),
    "STELLAR_CONT_FRESID": lambda c, s: c._in_footprint(
        np.abs(
            np.array([0.03, 0.09], dtype=np.float32)[:, None, None]
            * (1.0 + 0.2 * c._noise((2, c.size, c.size)))
        )
    ),
    "STELLAR_CONT_RCHI2": lambda c, s: c._in_footprint(
        np.abs(1.0 + 0.2 * c._noise((c.size, c.size)))
    ),
    "EMLINE_SFLUX": lambda c, s: c.moments[0],
    "EMLINE_SFLUX_IVAR": lambda c, s: c.moments[1],
    "EMLINE_SEW": lambda c, s: c.sew[0],
    "EMLINE_SEW_CNT": lambda c, s: c.sew[1],
    "EMLINE_SEW_IVAR": lambda c, s: c.sew[2],
    FLUX_EXTENSION: lambda c, s: c.lines.flux,
    IVAR_EXTENSION: lambda c, s: c.lines.ivar,
    "EMLINE_GEW": lambda c, s: c.gew[0],
    "EMLINE_GEW_CNT": lambda c, s: c.gew[1],
    "EMLINE_GEW_IVAR": lambda c, s: c.gew[2],
    "EMLINE_GVEL": lambda c, s: c.gvel[0],
    "EMLINE_GVEL_IVAR": lambda c, s: c.gvel[1],
    "EMLINE_GSIGMA": lambda c, s: c.gsigma[0],
    "EMLINE_GSIGMA_IVAR": lambda c, s: c.gsigma[1],
    "EMLINE_INSTSIGMA": lambda c, s: c.instsigma,
    "EMLINE_TPLSIGMA": lambda c, s: c.per_line_positive(15.0, 0.3),
    "EMLINE_GA": lambda c, s: c.amplitude,
    "EMLINE_GANR": lambda c, s: c._in_footprint(c.line_snr / 3.0),
    "EMLINE_FOM": lambda c, s: c.fom(),
    "EMLINE_LFOM": lambda c, s: c.per_line_positive(1.0, 0.1),
}
for _name in (
    "SPECINDEX", "SPECINDEX_IVAR", "SPECINDEX_CORR", "SPECINDEX_MODEL", "SPECINDEX_BF",
    "SPECINDEX_BF_IVAR", "SPECINDEX_BF_CORR", "SPECINDEX_BF_MODEL", "SPECINDEX_WGT",
    "SPECINDEX_WGT_IVAR", "SPECINDEX_WGT_CORR", "SPECINDEX_WGT_MODEL",
):  # fmt: skip
    _BUILDERS[_name] = lambda c, s, _n=_name: _specindex_family(c, _n)
