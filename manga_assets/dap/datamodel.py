"""The MaNGA DAP data model as far as this project needs it.

Everything here is read from the public DAP sources (mangadap 2.2.1 for DR15, 3.1.0 for DR17); see
``shared/reference/manga-dap.md``. The synthetic writer and the MAPS reader both take their
extension names, channel names, units and mask bits from this module, so the two can never drift
apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# The 19 emission lines the project stacks, in wavelength order (all DR15 lines with
# 3800 A < lambda < 8000 A). Names follow the DAP rule '{name}-{int(restwave)}'.
PROJECT_LINES: tuple[str, ...] = (
    "Heta-3836", "NeIII-3869", "Hzet-3890", "NeIII-3968", "Heps-3971", "Hdel-4102",
    "Hgam-4341", "HeII-4687", "Hb-4862", "OIII-4960", "OIII-5008", "HeI-5877",
    "OI-6302", "OI-6365", "NII-6549", "Ha-6564", "NII-6585", "SII-6718", "SII-6732",
)  # fmt: skip

# Rest-frame vacuum wavelengths (Angstrom) of the DR17 ELPMPL11 line list.
REST_WAVELENGTHS: dict[str, float] = {
    "OII-3727": 3727.092, "OII-3729": 3729.875, "H12-3751": 3751.2174, "H11-3771": 3771.7012,
    "Hthe-3798": 3798.9757, "Heta-3836": 3836.4720, "NeIII-3869": 3869.86,
    "HeI-3889": 3889.749, "Hzet-3890": 3890.1506, "NeIII-3968": 3968.59,
    "Heps-3971": 3971.1951, "Hdel-4102": 4102.8922, "Hgam-4341": 4341.6837,
    "HeII-4687": 4687.015, "Hb-4862": 4862.6830, "OIII-4960": 4960.295, "OIII-5008": 5008.240,
    "NI-5199": 5199.349, "NI-5201": 5201.705, "HeI-5877": 5877.252, "OI-6302": 6302.046,
    "OI-6365": 6365.536, "NII-6549": 6549.86, "Ha-6564": 6564.608, "NII-6585": 6585.27,
    "SII-6718": 6718.295, "SII-6732": 6732.674, "HeI-7067": 7067.657, "ArIII-7137": 7137.76,
    "ArIII-7753": 7753.24, "Peta-9017": 9017.384, "SIII-9071": 9071.1, "Pzet-9231": 9231.546,
    "SIII-9533": 9533.2, "Peps-9548": 9548.588,
}  # fmt: skip

# EMLINE_G* channel names by DAP version, in file order (keywords C01..Cnn).
EMLINE_CHANNELS: dict[str, tuple[str, ...]] = {
    "3.1.0": (
        "OII-3727", "OII-3729", "H12-3751", "H11-3771", "Hthe-3798", "Heta-3836",
        "NeIII-3869", "HeI-3889", "Hzet-3890", "NeIII-3968", "Heps-3971", "Hdel-4102",
        "Hgam-4341", "HeII-4687", "Hb-4862", "OIII-4960", "OIII-5008", "NI-5199", "NI-5201",
        "HeI-5877", "OI-6302", "OI-6365", "NII-6549", "Ha-6564", "NII-6585", "SII-6718",
        "SII-6732", "HeI-7067", "ArIII-7137", "ArIII-7753", "Peta-9017", "SIII-9071",
        "Pzet-9231", "SIII-9533", "Peps-9548",
    ),
    "2.2.1": (
        "OII-3727", "OII-3729", "Hthe-3798", "Heta-3836", "NeIII-3869", "Hzet-3890",
        "NeIII-3968", "Heps-3971", "Hdel-4102", "Hgam-4341", "HeII-4687", "Hb-4862",
        "OIII-4960", "OIII-5008", "HeI-5877", "OI-6302", "OI-6365", "NII-6549", "Ha-6564",
        "NII-6585", "SII-6718", "SII-6732",
    ),
}  # fmt: skip

# Line ratios the DAP fixes in its fit (weak line = ratio x strong line), by DAP version.
TIED_FLUX_RATIOS: dict[str, dict[str, tuple[str, float]]] = {
    "3.1.0": {
        "NeIII-3968": ("NeIII-3869", 0.30),
        "OIII-4960": ("OIII-5008", 0.35),
        "OI-6365": ("OI-6302", 0.32),
        "NII-6549": ("NII-6585", 0.34),
    },
    "2.2.1": {
        "OIII-4960": ("OIII-5008", 0.340),
        "OI-6365": ("OI-6302", 0.328),
        "NII-6549": ("NII-6585", 0.327),
    },
}

# Every MAPS extension after PRIMARY, in file order, by DAP version.
MAPS_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "3.1.0": (
        "SPX_SKYCOO", "SPX_ELLCOO", "SPX_MFLUX", "SPX_MFLUX_IVAR", "SPX_SNR", "BINID",
        "BIN_LWSKYCOO", "BIN_LWELLCOO", "BIN_AREA", "BIN_FAREA", "BIN_MFLUX",
        "BIN_MFLUX_IVAR", "BIN_MFLUX_MASK", "BIN_SNR", "STELLAR_VEL", "STELLAR_VEL_IVAR",
        "STELLAR_VEL_MASK", "STELLAR_SIGMA", "STELLAR_SIGMA_IVAR", "STELLAR_SIGMA_MASK",
        "STELLAR_SIGMACORR", "STELLAR_FOM", "EMLINE_SFLUX", "EMLINE_SFLUX_IVAR",
        "EMLINE_SFLUX_MASK", "EMLINE_SEW", "EMLINE_SEW_CNT", "EMLINE_SEW_IVAR",
        "EMLINE_SEW_MASK", "EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK",
        "EMLINE_GEW", "EMLINE_GEW_CNT", "EMLINE_GEW_IVAR", "EMLINE_GEW_MASK", "EMLINE_GVEL",
        "EMLINE_GVEL_IVAR", "EMLINE_GVEL_MASK", "EMLINE_GSIGMA", "EMLINE_GSIGMA_IVAR",
        "EMLINE_GSIGMA_MASK", "EMLINE_INSTSIGMA", "EMLINE_TPLSIGMA", "EMLINE_GA",
        "EMLINE_GANR", "EMLINE_FOM", "EMLINE_LFOM", "SPECINDEX", "SPECINDEX_IVAR",
        "SPECINDEX_MASK", "SPECINDEX_CORR", "SPECINDEX_MODEL", "SPECINDEX_BF",
        "SPECINDEX_BF_IVAR", "SPECINDEX_BF_MASK", "SPECINDEX_BF_CORR", "SPECINDEX_BF_MODEL",
        "SPECINDEX_WGT", "SPECINDEX_WGT_IVAR", "SPECINDEX_WGT_MASK", "SPECINDEX_WGT_CORR",
        "SPECINDEX_WGT_MODEL",
    ),
    "2.2.1": (
        "SPX_SKYCOO", "SPX_ELLCOO", "SPX_MFLUX", "SPX_MFLUX_IVAR", "SPX_SNR", "BINID",
        "BIN_LWSKYCOO", "BIN_LWELLCOO", "BIN_AREA", "BIN_FAREA", "BIN_MFLUX",
        "BIN_MFLUX_IVAR", "BIN_MFLUX_MASK", "BIN_SNR", "STELLAR_VEL", "STELLAR_VEL_IVAR",
        "STELLAR_VEL_MASK", "STELLAR_SIGMA", "STELLAR_SIGMA_IVAR", "STELLAR_SIGMA_MASK",
        "STELLAR_SIGMACORR", "STELLAR_CONT_FRESID", "STELLAR_CONT_RCHI2", "EMLINE_SFLUX",
        "EMLINE_SFLUX_IVAR", "EMLINE_SFLUX_MASK", "EMLINE_SEW", "EMLINE_SEW_IVAR",
        "EMLINE_SEW_MASK", "EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK",
        "EMLINE_GEW", "EMLINE_GEW_IVAR", "EMLINE_GEW_MASK", "EMLINE_GVEL", "EMLINE_GVEL_IVAR",
        "EMLINE_GVEL_MASK", "EMLINE_GSIGMA", "EMLINE_GSIGMA_IVAR", "EMLINE_GSIGMA_MASK",
        "EMLINE_INSTSIGMA", "EMLINE_TPLSIGMA", "SPECINDEX", "SPECINDEX_IVAR", "SPECINDEX_MASK",
        "SPECINDEX_CORR",
    ),
}  # fmt: skip

# The three extensions the pipeline reads: Gaussian-fit fluxes, their inverse variance, their mask.
FLUX_EXTENSION = "EMLINE_GFLUX"
IVAR_EXTENSION = "EMLINE_GFLUX_IVAR"
MASK_EXTENSION = "EMLINE_GFLUX_MASK"

FLUX_BUNIT = "1E-17 erg/s/cm^2/spaxel"
IVAR_BUNIT = "(1E-17 erg/s/cm^2/spaxel)^{-2}"

# MANGA_DAPPIXMASK: identical in DR15 and DR17.
DAPPIXMASK_BITS: dict[str, int] = {
    "NOCOV": 0, "LOWCOV": 1, "DEADFIBER": 2, "FORESTAR": 3, "NOVALUE": 4, "UNRELIABLE": 5,
    "MATHERROR": 6, "FITFAILED": 7, "NEARBOUND": 8, "NOCORRECTION": 9, "MULTICOMP": 10,
    "DONOTUSE": 30,
}  # fmt: skip

# Marvin's default for maps: what a careful user treats as invalid.
DEFAULT_INVALID_BITS: tuple[str, ...] = ("NOCOV", "UNRELIABLE", "DONOTUSE")

# Bit 30 is CRITICAL in both MANGA_DRP3QUAL and MANGA_DAPQUAL.
CRITICAL_BIT = 30

# MANGA_TARGET3 ancillary AGN programmes.
MNGTARG3_AGN_BITS: dict[str, int] = {"AGN_BAT": 1, "AGN_OIII": 2, "AGN_WISE": 3, "AGN_PALOMAR": 4}

SPEED_OF_LIGHT_KMS = 299792.458

# Spaxel size of DAP maps, arcsec.
SPAXEL_ARCSEC = 0.5


def mask_value(bit_names: tuple[str, ...] | list[str]) -> int:
    """The integer with the named MANGA_DAPPIXMASK bits set.

    Raises
    ------
    ValueError
        If a name is not a MANGA_DAPPIXMASK bit.
    """
    value = 0
    for name in bit_names:
        if name not in DAPPIXMASK_BITS:
            raise ValueError(
                f"{name!r} is not a MANGA_DAPPIXMASK bit; known bits: {', '.join(DAPPIXMASK_BITS)}"
            )
        value |= 1 << DAPPIXMASK_BITS[name]
    return value


def channel_keyword(index: int, n_channels: int) -> str:
    """Keyword of 0-based channel ``index``: ``C1``.. below 10 channels, else ``C01``.."""
    return f"C{index + 1}" if n_channels < 10 else f"C{index + 1:02d}"


@dataclass(frozen=True)
class MapsLayout:
    """What a MAPS file of one DAP version holds."""

    dapver: str
    extensions: tuple[str, ...]
    emline_channels: tuple[str, ...]


def maps_layout(dapver: str) -> MapsLayout:
    """The MAPS layout written by DAP version ``dapver`` ('2.2.1' for DR15, '3.1.0' for DR17)."""
    if dapver not in MAPS_EXTENSIONS:
        raise ValueError(f"unknown DAP version {dapver!r}; known: {', '.join(MAPS_EXTENSIONS)}")
    return MapsLayout(dapver, MAPS_EXTENSIONS[dapver], EMLINE_CHANNELS[dapver])
