"""Writing one DAP MAPS file: headers, HDUs in the DAP's order, deterministic gzip.

HDUs are serialised here rather than through ``HDUList.writeto``: a DR17 file has 64 HDUs with
up to 90 header cards each, and astropy's per-card bookkeeping cost more than compressing the
data. Cards are still formatted by :class:`astropy.io.fits.Card`, and the tests read every file
back with astropy. The bytes depend only on the data: no dates, and a gzip stream with mtime 0
and the FITS file's own name. Files are written under a temporary name and renamed, so a
half-written file is never seen.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits

from manga_assets.atomic import atomic_path
from manga_assets.dap.datamodel import (
    FLUX_EXTENSION,
    IVAR_EXTENSION,
    MASK_EXTENSION,
    SPAXEL_ARCSEC,
    channel_keyword,
    mask_value,
)
from manga_assets.sas.releases import Release
from manga_assets.synthetic.extensions import ExtensionSpec, MapsContent, extension_specs
from manga_assets.synthetic.physics import systemic_velocity
from manga_assets.synthetic.population import GalaxyParams

LEAN_EXTENSIONS: tuple[str, ...] = (FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION)
AUTHOR = "manga_assets.synthetic (synthetic data, not an SDSS product)"
_DONOTUSE = mask_value(["DONOTUSE"])
_BLOCK = 2880  # FITS record length, bytes


def primary_cards(params: GalaxyParams, release: Release, daptype: str) -> list[tuple]:
    """(keyword, value, comment) of the MAPS primary header: DRP keywords plus the DAP's own."""
    return [
        ("PLATEID", params.plateifu.plate, "Current plate"),
        ("IFUDSGN", str(params.plateifu.ifu), "IFU design id"),
        ("PLATEIFU", str(params.plateifu), "Plate-IFU designation"),
        ("MANGAID", params.mangaid, "MaNGA ID"),
        ("OBJRA", params.ra, "Object RA, deg"),
        ("OBJDEC", params.dec, "Object Dec, deg"),
        ("IFURA", params.ra, "IFU RA, deg"),
        ("IFUDEC", params.dec, "IFU Dec, deg"),
        ("MNGTARG1", params.mngtarg1, "MaNGA targeting bitmask 1"),
        ("MNGTARG2", 0, "MaNGA targeting bitmask 2"),
        ("MNGTARG3", params.mngtarg3, "MaNGA targeting bitmask 3"),
        ("EBVGAL", params.ebvgal, "Galactic reddening E(B-V)"),
        ("DRP3QUAL", params.drp3qual, "DRP-3d quality bitmask"),
        ("VERSDRP3", release.drpver, "MaNGA DRP version (3d processing)"),
        ("VERSDAP", release.dapver, "MaNGA DAP version"),
        ("DAPTYPE", daptype, "DAP analysis method"),
        ("DAPFRMT", "MAPS", "DAP data file format"),
        ("DAPQUAL", params.dapqual, "DAP quality bitmask"),
        ("MASKNAME", "MANGA_DAPPIXMASK", "Bits in the MASK extensions"),
        ("SCINPVEL", round(systemic_velocity(params), 4), "Initial guess stellar velocity (km/s)"),
        ("REFF", round(params.re_arcsec, 4), "Effective radius (arcsec)"),
        ("ECOOPA", round(params.position_angle, 4), "Position angle for ellip. coo"),
        ("ECOOELL", round(1.0 - params.axis_ratio, 4), "Ellipticity (1-b/a) for ellip. coo"),
        ("GEXTLAW", "ODonnell", "Galactic extinction law"),
        ("RVGAL", 3.1, "Ratio of total to selective extinction"),
        ("BINTYPE", "voronoi", "Binning method"),
        ("BINMINSN", 10.0, "Minimum S/N of bin"),
        ("AUTHOR", AUTHOR, None),
        ("COMMENT", "Synthetic MaNGA DAP MAPS file; every value is simulated.", None),
    ]


def _wcs_cards(params: GalaxyParams, size: int) -> list[tuple]:
    centre = (size - 1) / 2.0 + 1.0  # FITS pixels are 1-based
    degrees = SPAXEL_ARCSEC / 3600.0
    return [
        ("WCSAXES", 2, None),
        ("CTYPE1", "RA---TAN", None),
        ("CTYPE2", "DEC--TAN", None),
        ("CRPIX1", centre, None),
        ("CRPIX2", centre, None),
        ("CRVAL1", params.ra, None),
        ("CRVAL2", params.dec, None),
        ("CD1_1", -degrees, None),
        ("CD2_2", degrees, None),
        ("CUNIT1", "deg", None),
        ("CUNIT2", "deg", None),
    ]


@lru_cache(maxsize=512)
def extension_cards(spec: ExtensionSpec, present: frozenset[str]) -> tuple[tuple, ...]:
    """(keyword, value, comment) of one MAPS extension, with the SDSS HDUCLASS convention.

    Data extensions name their IVAR and MASK partners (when ``present``) in ERRDATA and
    QUALDATA; IVAR and MASK extensions name their data extension in SCIDATA. Channel names go to
    C01..Cnn (C1..C9 below ten channels), per-channel units to U01..Unn.
    """
    cards: list[tuple] = [
        ("EXTNAME", spec.name, None),
        ("HDUCLASS", "SDSS", "SDSS format class"),
        ("HDUCLAS1", "CUBE" if spec.channels else "IMAGE", None),
    ]
    if spec.name.endswith("_MASK"):
        base = spec.name[: -len("_MASK")]
        cards += [("HDUCLAS2", "QUALITY", None), ("HDUCLAS3", "FLAG32BIT", None)]
        cards.append(("SCIDATA", base, None))
        if f"{base}_IVAR" in present:
            cards.append(("ERRDATA", f"{base}_IVAR", None))
    elif spec.name.endswith("_IVAR"):
        base = spec.name[: -len("_IVAR")]
        cards += [("HDUCLAS2", "ERROR", None), ("HDUCLAS3", "INVMSE", None)]
        cards.append(("SCIDATA", base, None))
        if f"{base}_MASK" in present:
            cards.append(("QUALDATA", f"{base}_MASK", None))
    else:
        cards.append(("HDUCLAS2", "DATA", None))
        if f"{spec.name}_IVAR" in present:
            cards.append(("ERRDATA", f"{spec.name}_IVAR", None))
        if f"{spec.name}_MASK" in present:
            cards.append(("QUALDATA", f"{spec.name}_MASK", None))
    if spec.bunit:
        cards.append(("BUNIT", spec.bunit, None))
    if spec.channels:
        n_channels = len(spec.channels)
        for index, channel in enumerate(spec.channels):
            cards.append((channel_keyword(index, n_channels), channel, None))
        for index, unit in enumerate(spec.channel_units or ()):
            cards.append(("U" + channel_keyword(index, n_channels)[1:], unit, None))
    return tuple(cards)


@lru_cache(maxsize=4096)
def _card_images(cards: tuple[tuple, ...]) -> str:
    # Formatting cards through astropy keeps them standard-conforming; caching makes the ones
    # shared by every file (channel lists, units) free after the first galaxy.
    return "".join(fits.Card(*card).image for card in cards)


def _header_block(cards: Iterable[tuple], structural: list[tuple]) -> bytes:
    text = _card_images(tuple(structural)) + _card_images(tuple(cards)) + "END".ljust(80)
    text += " " * (-len(text) % _BLOCK)
    return text.encode("ascii")


def _data_block(data: np.ndarray) -> bytes:
    raw = data.astype(data.dtype.newbyteorder(">"), copy=False).tobytes()
    return raw + b"\0" * (-len(raw) % _BLOCK)


def _image_structure(data: np.ndarray) -> list[tuple]:
    bitpix = {np.dtype(np.float32): -32, np.dtype(np.int32): 32}[data.dtype]
    cards = [("XTENSION", "IMAGE", "Image extension"), ("BITPIX", bitpix, None)]
    cards.append(("NAXIS", data.ndim, None))
    # FITS lists axes fastest-varying first, the reverse of numpy's shape.
    cards += [(f"NAXIS{i + 1}", n, None) for i, n in enumerate(reversed(data.shape))]
    return cards + [("PCOUNT", 0, None), ("GCOUNT", 1, None)]


def maps_blocks(
    params: GalaxyParams,
    release: Release,
    daptype: str,
    content: MapsContent,
    *,
    lean: bool = False,
    drop: Iterable[str] = (),
    all_donotuse: bool = False,
) -> Iterator[tuple[str, bytes]]:
    """The bytes of one MAPS file, HDU by HDU in the DAP's order, as (EXTNAME, bytes) pieces.

    Each HDU gives a header piece and (except PRIMARY) a data piece, both labelled with its name.

    Parameters
    ----------
    params : GalaxyParams
        The galaxy.
    release : Release
        Fixes the DAP version and so the extension list.
    daptype : str
        DAPTYPE written into the header.
    content : MapsContent
        Source of every extension's data, computed only when its HDU is reached.
    lean : bool, optional
        Only PRIMARY and the three EMLINE_GFLUX extensions.
    drop : iterable of str, optional
        Extensions to leave out (to plant a broken file).
    all_donotuse : bool, optional
        Set DONOTUSE on every pixel of every MASK extension (a planted broken file).
    """
    specs = extension_specs(release.dapver, content.lines.channels)
    dropped = set(drop)
    names = [n for n in specs if (not lean or n in LEAN_EXTENSIONS) and n not in dropped]
    present = frozenset(names)
    wcs = _wcs_cards(params, content.size)
    primary_structure = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, None),
        ("NAXIS", 0, None),
        ("EXTEND", True, None),
    ]
    yield "PRIMARY", _header_block(primary_cards(params, release, daptype), primary_structure)
    for name in names:
        spec = specs[name]
        data = content.data(name, spec)
        if all_donotuse and name.endswith("_MASK"):
            data = data | np.int32(_DONOTUSE)
        yield (
            name,
            _header_block(extension_cards(spec, present) + tuple(wcs), _image_structure(data)),
        )
        yield name, _data_block(data)


def write_gzipped(path: Path, blocks: Iterable[bytes], gzip_level: int = 1) -> int:
    """Stream ``blocks`` into ``path`` (``.fits.gz``) reproducibly and atomically; return bytes.

    The gzip header carries mtime 0 and the uncompressed file name, so equal content gives equal
    bytes. The file appears under its name only once complete.
    """
    inner_name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    # keep_unchanged: rebuilding a release (say with one plate more) leaves unchanged files
    # untouched, mtime included, as an archive does, so a mirror's ETags stay the same.
    with atomic_path(path, keep_unchanged=True) as temporary, open(temporary, "wb") as handle:
        with gzip.GzipFile(
            filename=inner_name, mode="wb", compresslevel=gzip_level, fileobj=handle, mtime=0
        ) as stream:
            for block in blocks:
                stream.write(block)
    return path.stat().st_size


def write_fits(path: Path, hdulist: fits.HDUList) -> int:
    """Write an uncompressed FITS file atomically (catalogues); return its size in bytes."""
    with atomic_path(path, keep_unchanged=True) as temporary:
        hdulist.writeto(temporary, overwrite=True)
    return path.stat().st_size
