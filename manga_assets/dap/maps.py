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
    MapsFileError,
    MapsShapeError,
    MissingChannelError,
    MissingExtensionError,
    ReleaseMismatchError,
)
from manga_assets.dap.fitsstream import (
    DEFAULT_LIMITS,
    HEADER_PARSE_ERRORS,
    FitsLimits,
    SelectedHdus,
    read_hdus,
)

# The extensions the pipeline reads from every MAPS file.
MAPS_READ_EXTENSIONS = (FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION)


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


def channel_indices(header: fits.Header, *, path: Path | str = "") -> dict[str, int]:
    """Map channel name -> 0-based index from the ``Cn``/``Cnn`` keywords of an extension header.

    The keywords are not trusted: each must number a channel the data has (``C1`` to
    ``C{NAXIS3}``; ``C0`` would otherwise pick the last channel through index -1), no channel
    may be numbered twice, and no name may be given to two channels. A keyword given twice
    counts once, with its first value, as ``header[key]`` reads it in astropy.

    Raises
    ------
    MapsShapeError
        The extension is not 3-D (channels, ny, nx).
    MapsFileError
        A channel keyword is out of range, or channels are ambiguous.
    """
    extname = str(header.get("EXTNAME", "?")).strip()
    where = f"{path}: extension {extname}"
    n_channels = header.get("NAXIS3") if header.get("NAXIS") == 3 else None
    if isinstance(n_channels, bool) or not isinstance(n_channels, int):
        raise MapsShapeError(
            f"{where} has NAXIS = {header.get('NAXIS')!r}; expected a 3-D (channels, ny, nx) map"
        )
    channels: dict[str, int] = {}
    numbered: set[int] = set()
    for key in dict.fromkeys(header.keys()):  # each keyword once, in order
        if not (key.startswith("C") and key[1:].isdigit()):
            continue
        number = int(key[1:])
        name = str(header[key]).strip()
        if not 1 <= number <= n_channels:
            raise MapsFileError(
                f"{where} names channel {key} = {name!r}, but the extension has {n_channels} "
                f"channels (C1 to C{n_channels}); the file is corrupt. Delete it and download "
                "it again."
            )
        if number in numbered or name in channels:
            raise MapsFileError(
                f"{where} has two channel keywords for {key} or {name!r}; which channel holds "
                "that line is ambiguous. Delete the file and download it again."
            )
        numbered.add(number)
        channels[name] = number - 1
    return channels


def _select_channels(
    path: Path, extname: str, header: fits.Header, data: np.ndarray, lines: Sequence[str]
) -> np.ndarray:
    if data.ndim != 3:
        raise MapsShapeError(
            f"{path}: extension {extname} has shape {data.shape}; expected (channels, ny, nx)"
        )
    channels = channel_indices(header, path=path)
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


def read_versdap(path: Path | str, *, limits: FitsLimits = DEFAULT_LIMITS) -> str:
    """The VERSDAP of a MAPS file's primary header ('' if absent or the file is unreadable).

    Only the primary header is decompressed. An unreadable file gives '' rather than an error:
    the extraction step reads the file in full and reports why it is broken.
    """
    try:
        primary = read_hdus(Path(path), extnames=(), limits=limits).primary
        return str(primary.get("VERSDAP", "")).strip()
    except (DapError, *HEADER_PARSE_ERRORS):
        return ""


def check_maps_file(path: Path | str, *, limits: FitsLimits = DEFAULT_LIMITS) -> str:
    """Check that a downloaded MAPS file can be read safely; return its VERSDAP ('' if absent).

    The file is walked as :func:`read_maps` walks it, up to and through the three EMLINE_GFLUX
    extensions, with the same checks and ``limits``; so a file that passes here does not hang,
    exhaust memory or fail to parse later. A file without those extensions passes: whether it
    fits the configured release is the extraction step's question, and it says why not.

    Raises
    ------
    MapsFileError
        The file is unreadable, malformed, or larger than ``limits`` allow; the message names
        the file and the reason.
    """
    path = Path(path)
    try:
        selected = read_hdus(path, extnames=MAPS_READ_EXTENSIONS, limits=limits)
        return _text(selected.primary, "VERSDAP")
    except MissingExtensionError:
        return read_versdap(path, limits=limits)
    except DapError:
        raise
    except HEADER_PARSE_ERRORS as error:
        raise _unparsable(path, error) from error


def maps_file_problem(path: Path | str, *, limits: FitsLimits = DEFAULT_LIMITS) -> tuple[str, str]:
    """(VERSDAP, '') if :func:`check_maps_file` passes the file, else ('', why it refuses it)."""
    try:
        return check_maps_file(path, limits=limits), ""
    except MapsFileError as error:
        return "", str(error)


def _text(header: fits.Header, key: str) -> str:
    return str(header.get(key, "")).strip()


def _number(header: fits.Header, key: str) -> float:
    value = header.get(key, np.nan)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} = {value!r} is not a number")
    return float(value)


def _unparsable(path: Path, error: Exception) -> MapsFileError:
    return MapsFileError(
        f"{path}: a header value cannot be read ({type(error).__name__}: {error}); the file is "
        "corrupt. Delete it and download it again."
    )


def read_maps(
    path: Path | str,
    *,
    lines: Sequence[str] = PROJECT_LINES,
    invalid_bits: Sequence[str] = DEFAULT_INVALID_BITS,
    expected_dapver: str | None = None,
    expected_daptype: str | None = None,
    limits: FitsLimits = DEFAULT_LIMITS,
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
    limits : FitsLimits, optional
        How much the file may make the reader read (see :class:`FitsLimits`).

    Raises
    ------
    MapsFileError
        The file is missing, truncated, not FITS, malformed or larger than ``limits`` allow.
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
    selected = read_hdus(path, extnames=MAPS_READ_EXTENSIONS, limits=limits)
    try:
        return _maps_from_hdus(path, selected, lines, bad_bits, expected_dapver, expected_daptype)
    except DapError:
        raise
    except HEADER_PARSE_ERRORS as error:
        # astropy parses card values lazily, so a malformed one fails only when it is read.
        raise _unparsable(path, error) from error


def _maps_from_hdus(
    path: Path,
    selected: SelectedHdus,
    lines: Sequence[str],
    bad_bits: int,
    expected_dapver: str | None,
    expected_daptype: str | None,
) -> MapsData:
    primary, hdus = selected.primary, selected.extensions
    dapver = _text(primary, "VERSDAP")
    daptype = _text(primary, "DAPTYPE")
    if expected_dapver is not None:
        _check_layout(
            path,
            dapver,
            expected_dapver,
            selected.extnames_seen,
            tuple(channel_indices(hdus[FLUX_EXTENSION][0], path=path)),
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

    scinpvel = _number(primary, "SCINPVEL")
    return MapsData(
        path=path,
        plateifu=_text(primary, "PLATEIFU"),
        mangaid=_text(primary, "MANGAID"),
        daptype=daptype,
        dapver=dapver,
        redshift=scinpvel / SPEED_OF_LIGHT_KMS,
        objra=_number(primary, "OBJRA"),
        objdec=_number(primary, "OBJDEC"),
        ebvgal=_number(primary, "EBVGAL"),
        lines=tuple(lines),
        flux=flux,
        ivar=ivar,
        mask_bits=bits,
        invalid=invalid,
        n_nonfinite=n_nonfinite,
    )
