"""DRPall and DAPall catalogues of a synthetic release, in the layouts of DR15 and DR17.

DRPall: one row per data cube with lower-case columns; in DR17 HDU 1 'MANGA' and HDU 2 'MASTAR'
(a few stellar cubes); in DR15 one unnamed table in HDU 1, as DAP 2.2.1 reads it (by position).
DAPall: in DR17 an empty primary and one table per DAPTYPE named after it; in DR15 one table
'DAPALL' with a DAPTYPE column and a row per cube and DAPTYPE. DAPall columns are upper case;
values the DAP could not measure are -999, as in the real catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from manga_assets.sas.releases import RELEASE_DAPTYPES, Release
from manga_assets.synthetic.cosmology import (
    angular_diameter_distance_mpc,
    luminosity_distance_mpc,
)
from manga_assets.synthetic.fitsfile import write_fits
from manga_assets.synthetic.physics import EmissionLineMaps, GalaxyModel
from manga_assets.synthetic.population import GalaxyParams, iau_name

MISSING = -999.0
NSA_VERSION = "v1_0_1"
# Kennicutt (1998) Halpha calibration, Msun/yr per erg/s.
SFR_PER_HALPHA_LUMINOSITY = 7.9e-42
CM_PER_MPC = 3.0857e24
# Diameter of the DAPall's central aperture, arcsec.
CENTRAL_APERTURE_ARCSEC = 2.5


@dataclass(frozen=True)
class Column:
    """One catalogue column: name, numpy kind ('i4', 'i8', 'f4', 'f8', '?', 'S') and shape."""

    name: str
    kind: str
    shape: tuple[int, ...] = ()


DRPALL_COLUMNS: tuple[Column, ...] = (
    Column("plate", "i4"),
    Column("ifudsgn", "S"),
    Column("plateifu", "S"),
    Column("mangaid", "S"),
    Column("objra", "f8"),
    Column("objdec", "f8"),
    Column("ifura", "f8"),
    Column("ifudec", "f8"),
    Column("ebvgal", "f8"),
    Column("drp3qual", "i8"),
    Column("mngtarg1", "i8"),
    Column("mngtarg2", "i8"),
    Column("mngtarg3", "i8"),
    Column("ifudesignsize", "i4"),
    Column("srvymode", "S"),
    Column("nsa_iauname", "S"),
    Column("z", "f8"),
    Column("nsa_z", "f8"),
    Column("nsa_zdist", "f8"),
    Column("nsa_nsaid", "i8"),
    Column("nsa_version", "S"),
    Column("nsa_elpetro_ba", "f8"),
    Column("nsa_elpetro_phi", "f8"),
    Column("nsa_elpetro_th50_r", "f8"),
    Column("nsa_elpetro_mass", "f8"),
    Column("nsa_sersic_n", "f8"),
)


def dapall_columns(n_lines: int) -> tuple[Column, ...]:
    """DAPall columns for a DAP version with ``n_lines`` Gaussian-fit emission lines."""
    return (
        Column("PLATE", "i4"),
        Column("IFUDESIGN", "i4"),
        Column("PLATEIFU", "S"),
        Column("MANGAID", "S"),
        Column("DRPALLINDX", "i8"),
        Column("MODE", "S"),
        Column("DAPTYPE", "S"),
        Column("DAPDONE", "?"),
        Column("OBJRA", "f8"),
        Column("OBJDEC", "f8"),
        Column("IFURA", "f8"),
        Column("IFUDEC", "f8"),
        Column("MNGTARG1", "i8"),
        Column("MNGTARG2", "i8"),
        Column("MNGTARG3", "i8"),
        Column("Z", "f8"),
        Column("LDIST_Z", "f8"),
        Column("ADIST_Z", "f8"),
        Column("NSA_Z", "f8"),
        Column("NSA_ZDIST", "f8"),
        Column("NSA_ELPETRO_BA", "f8"),
        Column("NSA_ELPETRO_PHI", "f8"),
        Column("NSA_ELPETRO_TH50_R", "f8"),
        Column("NSA_SERSIC_N", "f8"),
        Column("VERSDRP3", "S"),
        Column("VERSDAP", "S"),
        Column("DRP3QUAL", "i8"),
        Column("DAPQUAL", "i8"),
        Column("BINKEY", "S"),
        Column("SCKEY", "S"),
        Column("ELFKEY", "S"),
        Column("RCOV90", "f8"),
        Column("SNR_MED", "f8", (4,)),
        Column("SB_1RE", "f8"),
        Column("STELLAR_SIGMA_1RE", "f8"),
        Column("HA_Z", "f8"),
        Column("HA_GSIGMA_1RE", "f8"),
        Column("HA_GSIGMA_HI", "f8"),
        Column("EMLINE_GFLUX_CEN", "f8", (n_lines,)),
        Column("EMLINE_GFLUX_1RE", "f8", (n_lines,)),
        Column("EMLINE_GFLUX_TOT", "f8", (n_lines,)),
        Column("SFR_1RE", "f8"),
        Column("SFR_TOT", "f8"),
    )


def drpall_row(params: GalaxyParams) -> dict[str, object]:
    """The DRPall row of one cube."""
    return {
        "plate": params.plateifu.plate,
        "ifudsgn": str(params.plateifu.ifu),
        "plateifu": str(params.plateifu),
        "mangaid": params.mangaid,
        "objra": params.ra,
        "objdec": params.dec,
        "ifura": params.ra,
        "ifudec": params.dec,
        "ebvgal": params.ebvgal,
        "drp3qual": params.drp3qual,
        "mngtarg1": params.mngtarg1,
        "mngtarg2": 0,
        "mngtarg3": params.mngtarg3,
        "ifudesignsize": params.ifu_size,
        "srvymode": "MaNGA dither",
        "nsa_iauname": iau_name(params),
        "z": params.z,
        "nsa_z": params.z,
        "nsa_zdist": params.z,
        "nsa_nsaid": params.nsa_id,
        "nsa_version": NSA_VERSION,
        "nsa_elpetro_ba": params.axis_ratio,
        "nsa_elpetro_phi": params.position_angle,
        "nsa_elpetro_th50_r": params.re_arcsec,
        # NSA masses are in Msun/h^2 with h = 1; catalogue users divide by 0.7^2.
        "nsa_elpetro_mass": 10.0**params.log_mass * 0.7**2,
        "nsa_sersic_n": params.sersic_n,
    }


def mastar_rows(first_plate: int) -> list[dict[str, object]]:
    """A few MaStar (stellar library) cubes for the DR17 DRPall's second extension."""
    rows = []
    for index in range(3):
        ifu = 701 + index
        rows.append(
            {
                "plate": first_plate,
                "ifudsgn": str(ifu),
                "plateifu": f"{first_plate}-{ifu}",
                "mangaid": f"3-{first_plate}{ifu:05d}",
                "objra": 10.0 + index,
                "objdec": 20.0 + index,
                "ifura": 10.0 + index,
                "ifudec": 20.0 + index,
                "ebvgal": 0.03,
                "drp3qual": 0,
                "mngtarg1": 0,
                "mngtarg2": 1 << 2,
                "mngtarg3": 0,
                "ifudesignsize": 7,
                "srvymode": "MaStar",
                "nsa_iauname": "",
                "z": MISSING,
                "nsa_z": MISSING,
                "nsa_zdist": MISSING,
                "nsa_nsaid": -1,
                "nsa_version": "",
                "nsa_elpetro_ba": MISSING,
                "nsa_elpetro_phi": MISSING,
                "nsa_elpetro_th50_r": MISSING,
                "nsa_elpetro_mass": MISSING,
                "nsa_sersic_n": MISSING,
            }
        )
    return rows


def dap_measurements(
    params: GalaxyParams, model: GalaxyModel, lines: EmissionLineMaps
) -> dict[str, object]:
    """The DAPall's map-derived quantities of one analysed cube.

    Fluxes are summed over valid spaxels (IVAR > 0) within the 2.5-arcsec central aperture,
    within one effective radius (elliptical) and over the whole map, in 1E-17 erg/s/cm^2. SFRs
    use Kennicutt (1998) on the uncorrected Halpha flux, in Msun/yr/h^2.
    """
    grid, coords = model.grid, model.coords
    valid = lines.ivar > 0
    flux = np.where(valid, lines.flux, 0.0).astype(np.float64)
    central = coords.sky_radius <= CENTRAL_APERTURE_ARCSEC / 2
    within_re = (coords.radius <= params.re_arcsec) & grid.footprint
    ha = lines.channel("Ha-6564")
    luminosity_factor = 4 * np.pi * (luminosity_distance_mpc(params.z) * CM_PER_MPC) ** 2 * 1e-17
    ha_1re, ha_tot = flux[ha][within_re].sum(), flux[ha].sum()
    weights = np.clip(flux[ha][within_re], 0.0, None)
    sigma_1re = model.gas_sigma[within_re]
    snr = model.continuum[grid.footprint] / (0.03 * model.continuum[grid.footprint] + 0.01)
    return {
        "RCOV90": float(np.percentile(coords.radius[grid.footprint], 90)),
        "SNR_MED": float(np.median(snr)) * np.array([0.8, 1.0, 1.1, 0.9]),
        "SB_1RE": float(model.continuum[within_re].mean()),
        "STELLAR_SIGMA_1RE": float(model.stellar_sigma[within_re].mean()),
        "HA_Z": params.z,
        "HA_GSIGMA_1RE": float(np.average(sigma_1re, weights=weights))
        if weights.sum() > 0
        else MISSING,
        "HA_GSIGMA_HI": float(np.percentile(model.gas_sigma[grid.footprint], 90)),
        "EMLINE_GFLUX_CEN": flux[:, central].sum(axis=1),
        "EMLINE_GFLUX_1RE": flux[:, within_re].sum(axis=1),
        "EMLINE_GFLUX_TOT": flux.sum(axis=(1, 2)),
        "SFR_1RE": SFR_PER_HALPHA_LUMINOSITY * luminosity_factor * ha_1re,
        "SFR_TOT": SFR_PER_HALPHA_LUMINOSITY * luminosity_factor * ha_tot,
    }


def _binkey(daptype: str) -> tuple[str, str, str]:
    parts = daptype.split("-")
    return parts[0], "-".join(parts[1:]), "-".join(parts[1:])


def dapall_rows(
    galaxies: Sequence[GalaxyParams],
    measurements: Sequence[dict[str, object] | None],
    release: Release,
    daptype: str,
    n_lines: int,
) -> list[dict[str, object]]:
    """DAPall rows of one DAPTYPE, in DRPall order (``measurements`` None: DAP not done)."""
    binkey, sckey, elfkey = _binkey(daptype)
    rows = []
    for index, (params, measured) in enumerate(zip(galaxies, measurements, strict=True)):
        row: dict[str, object] = {
            "PLATE": params.plateifu.plate,
            "IFUDESIGN": params.plateifu.ifu,
            "PLATEIFU": str(params.plateifu),
            "MANGAID": params.mangaid,
            "DRPALLINDX": index,
            "MODE": "CUBE",
            "DAPTYPE": daptype,
            "DAPDONE": measured is not None,
            "OBJRA": params.ra,
            "OBJDEC": params.dec,
            "IFURA": params.ra,
            "IFUDEC": params.dec,
            "MNGTARG1": params.mngtarg1,
            "MNGTARG2": 0,
            "MNGTARG3": params.mngtarg3,
            "Z": params.z,
            "LDIST_Z": luminosity_distance_mpc(params.z),
            "ADIST_Z": angular_diameter_distance_mpc(params.z),
            "NSA_Z": params.z,
            "NSA_ZDIST": params.z,
            "NSA_ELPETRO_BA": params.axis_ratio,
            "NSA_ELPETRO_PHI": params.position_angle,
            "NSA_ELPETRO_TH50_R": params.re_arcsec,
            "NSA_SERSIC_N": params.sersic_n,
            "VERSDRP3": release.drpver,
            "VERSDAP": release.dapver,
            "DRP3QUAL": params.drp3qual,
            "DAPQUAL": params.dapqual,
            "BINKEY": binkey,
            "SCKEY": sckey,
            "ELFKEY": elfkey,
        }
        if measured is None:
            for column in dapall_columns(n_lines)[len(row) :]:
                row[column.name] = np.full(column.shape, MISSING) if column.shape else MISSING
        else:
            row.update(measured)
        rows.append(row)
    return rows


def table_hdu(
    rows: Sequence[dict[str, object]], columns: Sequence[Column], extname: str | None
) -> fits.BinTableHDU:
    """A binary table with ``columns`` filled from ``rows`` (strings sized to their longest).

    ``extname`` None writes no EXTNAME.
    """
    dtype = []
    for column in columns:
        if column.kind == "S":
            width = max([len(str(row[column.name])) for row in rows] + [1])
            dtype.append((column.name, f"S{width}"))
        else:
            dtype.append((column.name, column.kind, column.shape))
    table = np.zeros(len(rows), dtype=dtype)
    for index, row in enumerate(rows):
        for column in columns:
            value = row[column.name]
            table[column.name][index] = value.encode() if column.kind == "S" else value
    return fits.BinTableHDU(data=table, name=extname)


def write_drpall(path: Path, galaxies: Sequence[GalaxyParams], release: Release) -> int:
    """Write the DRPall of ``galaxies``; return its size in bytes."""
    rows = [drpall_row(g) for g in galaxies]
    if not release.dapall_per_daptype:
        # DR15 (drpall-v2_4_3): one unnamed table in HDU 1, read by position.
        unnamed = table_hdu(rows, DRPALL_COLUMNS, None)
        return write_fits(path, fits.HDUList([fits.PrimaryHDU(), unnamed]))
    # DR17 splits MaNGA galaxies (HDU 1 'MANGA') from MaStar stars (HDU 2 'MASTAR').
    first_plate = galaxies[0].plateifu.plate if galaxies else 10001
    hdus = [
        fits.PrimaryHDU(),
        table_hdu(rows, DRPALL_COLUMNS, "MANGA"),
        table_hdu(mastar_rows(first_plate), DRPALL_COLUMNS, "MASTAR"),
    ]
    return write_fits(path, fits.HDUList(hdus))


def write_dapall(
    path: Path,
    galaxies: Sequence[GalaxyParams],
    measurements: Sequence[dict[str, object] | None],
    release: Release,
    n_lines: int,
) -> int:
    """Write the DAPall (every DAPTYPE of the release); return its size in bytes.

    Every DAPTYPE gets the same measurements: only the default DAPTYPE has MAPS files here.
    """
    columns = dapall_columns(n_lines)
    per_daptype = {
        daptype: dapall_rows(galaxies, measurements, release, daptype, n_lines)
        for daptype in RELEASE_DAPTYPES[release.name]
    }
    hdus: list[fits.PrimaryHDU | fits.BinTableHDU] = [fits.PrimaryHDU()]
    if release.dapall_per_daptype:
        hdus += [table_hdu(rows, columns, daptype) for daptype, rows in per_daptype.items()]
    else:
        all_rows = [row for rows in per_daptype.values() for row in rows]
        hdus.append(table_hdu(all_rows, columns, "DAPALL"))
    return write_fits(path, fits.HDUList(hdus))
