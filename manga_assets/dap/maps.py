"""Reading emission-line maps from a DAP MAPS file.

Channels are chosen by name from the ``C01..Cnn`` header keywords, never by index, because the
channel order differs between releases (DR15: 22 lines, DR17: 35 lines).

A file is matched to a release by its layout (extension names and emission-line channels), not by
its VERSDAP: files of one release can carry other patch or development versions of the DAP (the
real DR15-layout file in ``shared/data/real/`` says ``2.2.3dev``), and what the reader relies on
is the layout.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from manga_assets.dap.datamodel import (
    DEFAULT_INVALID_BITS,
    FLUX_EXTENSION,
    IVAR_EXTENSION,
    MASK_EXTENSION,
    PROJECT_LINES,
    SPEED_OF_LIGHT_KMS,
    maps_layout,
    mask_value,
)
from manga_assets.dap.errors import (
    DapError,
    DapWarning,
    MapsShapeError,
    MissingChannelError,
    ReleaseMismatchError,
)
from manga_assets.dap.fitsstream import read_hdus


@dataclass(frozen=True)
class MapsData:
    """Emission-line maps of one galaxy, as read from its MAPS file.

    Attributes
    ----------
    path : Path
    plateifu, mangaid, daptype, dapver : str
        From the primary header (PLATEIFU, MANGAID, DAPTYPE, VERSDAP).
    redshift : float
        SCINPVEL / c, as the DAPall computes it.
    objra, objdec, ebvgal : float
        Target position (deg) and Galactic E(B-V) (mag).
    lines : tuple of str
        Channel names, in the order of the arrays' first axis.
    flux : ndarray, float32, (n_lines, ny, nx)
        Gaussian-fit line flux in 1E-17 erg/s/cm^2 per 0.5 arcsec spaxel; 0 where invalid.
    ivar : ndarray, float32, (n_lines, ny, nx)
        Inverse variance of ``flux``; 0 where invalid.
    mask_bits : ndarray, int32, (n_lines, ny, nx)
        MANGA_DAPPIXMASK bits as stored.
    invalid : ndarray, bool, (n_lines, ny, nx)
        True where a configured mask bit is set, IVAR <= 0, or a value is not finite.
    n_nonfinite : int
        Number of flux or IVAR values that were NaN or infinite (now invalid).
    """

    path: Path
    plateifu: str
    mangaid: str
    daptype: str
    dapver: str
    redshift: float
    objra: float
    objdec: float
    ebvgal: float
    lines: tuple[str, ...]
    flux: np.ndarray
    ivar: np.ndarray
    mask_bits: np.ndarray
    invalid: np.ndarray
    n_nonfinite: int


def channel_indices(header: fits.Header) -> dict[str, int]:
    """Map channel name -> 0-based index from the ``Cn``/``Cnn`` keywords of an extension header."""
    channels = {}
    for key, value in header.items():
        if key.startswith("C") and key[1:].isdigit():
            channels[str(value).strip()] = int(key[1:]) - 1
    return channels


def _select_channels(
    path: Path, extname: str, header: fits.Header, data: np.ndarray, lines: Sequence[str]
) -> np.ndarray:
    if data.ndim != 3:
        raise MapsShapeError(
            f"{path}: extension {extname} has shape {data.shape}; expected (channels, ny, nx)"
        )
    channels = channel_indices(header)
    missing = [line for line in lines if line not in channels]
    if missing:
        raise MissingChannelError(
            f"{path}: extension {extname} has no channel {', '.join(map(repr, missing))}; it has "
            f"{', '.join(channels)}. Choose lines present in this release's line list."
        )
    return data[[channels[line] for line in lines]]


def _few(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > limit else shown


def _check_layout(
    path: Path,
    dapver: str,
    release_dapver: str,
    extnames_seen: Sequence[str],
    channels: Sequence[str],
) -> None:
    """Refuse a file of another DAP layout; warn about another DAP version of the same layout.

    Only the extensions passed before the last one read are known (the rest of the file is never
    decompressed); an extension that the release's DAP does not write is enough to tell DR17 from
    DR15 (STELLAR_FOM, EMLINE_SEW_CNT against STELLAR_CONT_FRESID, STELLAR_CONT_RCHI2). An
    extension that is absent is not held against the file: the three the pipeline reads are
    checked by name anyway.
    """
    layout = maps_layout(release_dapver)
    foreign = [name for name in extnames_seen if name not in layout.extensions]
    extra = [name for name in channels if name not in layout.emline_channels]
    missing = [name for name in layout.emline_channels if name not in channels]
    differences = []
    if foreign:
        differences.append(f"extensions DAP {release_dapver} does not write ({_few(foreign)})")
    if extra or missing:
        differences.append(
            f"{len(channels)} {FLUX_EXTENSION} channels where DAP {release_dapver} writes "
            f"{len(layout.emline_channels)} (not in its list: {_few(extra) or 'none'}; "
            f"absent: {_few(missing) or 'none'})"
        )
    if differences:
        raise ReleaseMismatchError(
            f"{path}: made by DAP {dapver or 'unknown'}, but the configured release uses DAP "
            f"{release_dapver}; the file has {' and '.join(differences)}. Point MANGA_RELEASE "
            "at the file's release or use another data dir."
        )
    if dapver != release_dapver:
        warnings.warn(
            f"{path}: VERSDAP is {dapver or 'missing'}, not the release's {release_dapver}; the "
            f"file has the extensions and channels of DAP {release_dapver} and is read as such.",
            DapWarning,
            stacklevel=3,
        )


def read_versdap(path: Path | str) -> str:
    """The VERSDAP of a MAPS file's primary header ('' if absent or the file is unreadable).

    Only the primary header is decompressed. An unreadable file gives '' rather than an error:
    the extraction step reads the file in full and reports why it is broken.
    """
    try:
        primary = read_hdus(Path(path), extnames=()).primary
    except DapError:
        return ""
    return str(primary.get("VERSDAP", "")).strip()


def read_maps(
    path: Path | str,
    *,
    lines: Sequence[str] = PROJECT_LINES,
    invalid_bits: Sequence[str] = DEFAULT_INVALID_BITS,
    expected_dapver: str | None = None,
    expected_daptype: str | None = None,
) -> MapsData:
    """Read the Gaussian-fit emission-line maps of the named lines from a MAPS file.

    Only the primary header and the EMLINE_GFLUX, EMLINE_GFLUX_IVAR and EMLINE_GFLUX_MASK
    extensions are read; decompression stops after the last of them.

    Parameters
    ----------
    path : Path or str
        A ``manga-*-MAPS-*.fits.gz`` file (DR15 or DR17 layout).
    lines : sequence of str, optional
        Channel names to read, e.g. ``'Ha-6564'``; default the project's 19 lines.
    invalid_bits : sequence of str, optional
        MANGA_DAPPIXMASK bits that make a value invalid; default NOCOV, UNRELIABLE, DONOTUSE.
    expected_dapver : str, optional
        The DAP version of the configured release ('2.2.1' for DR15, '3.1.0' for DR17). When
        given, the file must have that version's layout: no extension that version does not
        write, and the same EMLINE_GFLUX channels. A DR15 file in a DR17 products tree (or the
        reverse) is refused rather than mixed in. A file of that layout but another VERSDAP
        (a patch or development version) is read, with a :class:`DapWarning` naming its VERSDAP.
    expected_daptype : str, optional
        When given, the primary header's DAPTYPE must match.

    Raises
    ------
    MapsFileError
        The file is missing, truncated or not FITS.
    MissingExtensionError, MissingChannelError
        An extension or a line is absent.
    MapsShapeError
        The three extensions disagree in shape.
    ReleaseMismatchError
        The file's layout is not that of ``expected_dapver``, or DAPTYPE differs.

    Warns
    -----
    DapWarning
        The file has the expected layout but another VERSDAP; or it holds NaN or infinite values.
    """
    path = Path(path)
    bad_bits = mask_value(tuple(invalid_bits))
    selected = read_hdus(path, extnames=(FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION))
    primary, hdus = selected.primary, selected.extensions

    dapver = str(primary.get("VERSDAP", "")).strip()
    daptype = str(primary.get("DAPTYPE", "")).strip()
    if expected_dapver is not None:
        _check_layout(
            path,
            dapver,
            expected_dapver,
            selected.extnames_seen,
            tuple(channel_indices(hdus[FLUX_EXTENSION][0])),
        )
    if expected_daptype is not None and daptype != expected_daptype:
        raise ReleaseMismatchError(
            f"{path}: DAPTYPE is {daptype or 'unknown'}, expected {expected_daptype}."
        )

    flux, ivar, bits = (
        _select_channels(path, name, *hdus[name], lines)
        for name in (FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION)
    )
    if not flux.shape == ivar.shape == bits.shape:
        raise MapsShapeError(
            f"{path}: EMLINE_GFLUX {flux.shape}, EMLINE_GFLUX_IVAR {ivar.shape} and "
            f"EMLINE_GFLUX_MASK {bits.shape} differ in shape"
        )

    flux = flux.astype(np.float32, copy=False)
    ivar = ivar.astype(np.float32, copy=False)
    bits = bits.astype(np.int32, copy=False)
    nonfinite = ~(np.isfinite(flux) & np.isfinite(ivar))
    n_nonfinite = int(nonfinite.sum())
    if n_nonfinite:
        warnings.warn(
            f"{path}: {n_nonfinite} non-finite flux or IVAR values are treated as invalid",
            DapWarning,
            stacklevel=2,
        )
    invalid = ((bits & bad_bits) != 0) | (ivar <= 0) | nonfinite
    flux = np.where(invalid, np.float32(0), flux)
    ivar = np.where(invalid, np.float32(0), ivar)

    scinpvel = float(primary.get("SCINPVEL", np.nan))
    return MapsData(
        path=path,
        plateifu=str(primary.get("PLATEIFU", "")).strip(),
        mangaid=str(primary.get("MANGAID", "")).strip(),
        daptype=daptype,
        dapver=dapver,
        redshift=scinpvel / SPEED_OF_LIGHT_KMS,
        objra=float(primary.get("OBJRA", np.nan)),
        objdec=float(primary.get("OBJDEC", np.nan)),
        ebvgal=float(primary.get("EBVGAL", np.nan)),
        lines=tuple(lines),
        flux=flux,
        ivar=ivar,
        mask_bits=bits,
        invalid=invalid,
        n_nonfinite=n_nonfinite,
    )
