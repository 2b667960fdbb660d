"""Per-galaxy summary quantities measured on the original DAP maps.

Fluxes are in 1E-17 erg/s/cm^2 (sums over 0.5 arcsec spaxels). Central quantities use the
spaxels within ``CENTRAL_RADIUS_ARCSEC`` of the map centre, where the IFU is pointed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manga_assets.dap.datamodel import SPAXEL_ARCSEC

CENTRAL_RADIUS_ARCSEC = 1.5

# (numerator lines, denominator lines) of the BPT ratios, as features column suffixes.
BPT_RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log_nii_ha": (("NII-6585",), ("Ha-6564",)),
    "log_sii_ha": (("SII-6718", "SII-6732"), ("Ha-6564",)),
    "log_oi_ha": (("OI-6302",), ("Ha-6564",)),
    "log_oiii_hb": (("OIII-5008",), ("Hb-4862",)),
}


def column_name(line: str) -> str:
    """A line name made safe for a column name ('Ha-6564' -> 'Ha_6564')."""
    return line.replace("-", "_")


def central_aperture(ny: int, nx: int, radius_arcsec: float = CENTRAL_RADIUS_ARCSEC) -> np.ndarray:
    """Boolean (ny, nx) map of the spaxels within ``radius_arcsec`` of the map centre."""
    y, x = np.mgrid[:ny, :nx]
    radius = np.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2) * SPAXEL_ARCSEC
    return radius <= radius_arcsec


def galaxy_features(
    lines: Sequence[str], flux: np.ndarray, ivar: np.ndarray, invalid: np.ndarray
) -> dict[str, float]:
    """Integrated and central fluxes, central S/N and central BPT ratios of one galaxy.

    Parameters
    ----------
    lines : sequence of str
        Names of the first axis of the arrays.
    flux, ivar, invalid : ndarray, (lines, ny, nx)
        Maps as returned by :func:`manga_assets.dap.maps.read_maps`.

    Returns
    -------
    dict
        ``flux_int_<line>``, ``flux_cen_<line>``, ``snr_cen_<line>`` for every line, the four
        ``log_*`` ratios (NaN unless every line involved has positive central flux) with
        ``snr_min_<ratio>`` (the lowest central S/N of the lines involved), ``n_central_spaxels``
        and ``valid_fraction_map`` (share of valid spaxel values over all lines).
    """
    valid = ~invalid
    good_flux = np.where(valid, flux, 0.0).astype(np.float64)
    variance = np.zeros_like(good_flux)
    np.divide(1.0, ivar, out=variance, where=valid & (ivar > 0))
    centre = central_aperture(*flux.shape[1:])

    row: dict[str, float] = {}
    central_flux: dict[str, float] = {}
    central_snr: dict[str, float] = {}
    for index, line in enumerate(lines):
        name = column_name(line)
        row[f"flux_int_{name}"] = float(good_flux[index].sum())
        cen = float(good_flux[index][centre].sum())
        noise = float(np.sqrt(variance[index][centre].sum()))
        central_flux[line] = cen
        central_snr[line] = cen / noise if noise > 0 else 0.0
        row[f"flux_cen_{name}"] = cen
        row[f"snr_cen_{name}"] = central_snr[line]

    for ratio, (numerator, denominator) in BPT_RATIOS.items():
        involved = (*numerator, *denominator)
        if not all(line in central_flux for line in involved):
            continue
        top = sum(central_flux[line] for line in numerator)
        bottom = sum(central_flux[line] for line in denominator)
        positive = all(central_flux[line] > 0 for line in involved)
        row[ratio] = float(np.log10(top / bottom)) if positive else float("nan")
        row[f"snr_min_{ratio}"] = float(min(central_snr[line] for line in involved))

    row["n_central_spaxels"] = float(centre.sum())
    row["valid_fraction_map"] = float(valid.mean())
    return row
