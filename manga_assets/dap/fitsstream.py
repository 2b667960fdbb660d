"""Forward-only reading of selected HDUs from a (gzipped) FITS file.

astropy can read a ``.fits.gz`` file, but every backward seek in a gzip stream starts the
decompression again from the top, and finding an extension by name walks every header before it.
A DAP MAPS file has 48-64 extensions and the pipeline needs three that lie halfway through, so
this module walks the stream once, parses each header with astropy, skips the data it does not
need, and stops as soon as it has what was asked for.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from astropy.io import fits

from manga_assets.dap.errors import MapsFileError, MissingExtensionError

_BLOCK = 2880
_CARD = 80
_SKIP_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


@dataclass(frozen=True)
class _RawHeader:
    """A header as read: its text, and the few structural keywords parsed without astropy."""

    text: str
    cards: dict[str, str]

    @property
    def extname(self) -> str:
        return self.cards.get("EXTNAME", "").strip("' ").upper()

    def integer(self, key: str, default: int = 0) -> int:
        return int(self.cards[key]) if key in self.cards else default

    def to_header(self) -> fits.Header:
        return fits.Header.fromstring(self.text)


_STRUCTURE = re.compile(rb"(BITPIX|NAXIS\d*|PCOUNT|GCOUNT|EXTNAME) *= *('[^']*'|[^/ ]+)")


def _read_header(stream: BinaryIO, path: Path) -> _RawHeader | None:
    """The next header in ``stream``, or None at a clean end of file.

    Only the structural keywords are parsed here; astropy parses a whole header only when the
    HDU is one the caller asked for (it costs ~0.3 ms a header, and a MAPS file has 64).
    """
    blocks = []
    while True:
        block = stream.read(_BLOCK)
        if not block and not blocks:
            return None
        if len(block) < _BLOCK:
            raise MapsFileError(
                f"{path}: the file ends inside a FITS header; it is truncated. "
                "Delete it and download it again."
            )
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, _BLOCK, _CARD)):
            break
    if not blocks[0].startswith((b"SIMPLE  =", b"XTENSION=")):
        raise MapsFileError(f"{path}: not a FITS file (no SIMPLE/XTENSION card where one belongs)")
    raw = b"".join(blocks)
    cards = {}
    for start in range(0, len(raw), _CARD):
        match = _STRUCTURE.match(raw, start, start + _CARD)
        if match:
            cards[match[1].decode()] = match[2].decode("ascii", errors="replace")
    return _RawHeader(raw.decode("ascii", errors="replace"), cards)


def _data_size(header: _RawHeader) -> int:
    """Bytes of data following ``header``, padding to whole FITS blocks included."""
    naxis = header.integer("NAXIS")
    if naxis == 0:
        return 0
    n_elements = 1
    for axis in range(1, naxis + 1):
        n_elements *= header.integer(f"NAXIS{axis}")
    n_bits = (
        abs(header.integer("BITPIX"))
        * header.integer("GCOUNT", 1)
        * (header.integer("PCOUNT") + n_elements)
    )
    return -(-(n_bits // 8) // _BLOCK) * _BLOCK


def _skip(stream: BinaryIO, n_bytes: int, path: Path) -> None:
    remaining = n_bytes
    while remaining > 0:
        chunk = stream.read(min(remaining, _SKIP_CHUNK))
        if not chunk:
            raise MapsFileError(
                f"{path}: the file ends inside an HDU's data; it is truncated. "
                "Delete it and download it again."
            )
        remaining -= len(chunk)


def _read_image(
    stream: BinaryIO, raw_header: _RawHeader, header: fits.Header, path: Path
) -> np.ndarray:
    padded = _data_size(raw_header)
    shape = tuple(header[f"NAXIS{axis}"] for axis in range(header["NAXIS"], 0, -1))
    dtype = np.dtype(_DTYPES[header["BITPIX"]])
    raw = stream.read(padded)
    if len(raw) < padded:
        raise MapsFileError(
            f"{path}: the data of extension {header.get('EXTNAME', '?')!r} is truncated. "
            "Delete the file and download it again."
        )
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    data = data.astype(dtype.newbyteorder("="))
    scale, zero = header.get("BSCALE", 1), header.get("BZERO", 0)
    if scale != 1 or zero != 0:
        data = data * scale + zero
    return data


@dataclass(frozen=True)
class SelectedHdus:
    """What :func:`read_hdus` read from one file.

    Attributes
    ----------
    primary : astropy.io.fits.Header
        The primary header.
    extensions : dict
        Upper-case EXTNAME -> (header, data array in native byte order, numpy axis order).
    extnames_seen : tuple of str
        EXTNAMEs of every extension passed on the way, in file order, up to the last one read:
        enough to tell one DAP version's layout from another's without reading the rest.
    """

    primary: fits.Header
    extensions: dict[str, tuple[fits.Header, np.ndarray]]
    extnames_seen: tuple[str, ...]


def read_hdus(path: Path, *, extnames: Iterable[str]) -> SelectedHdus:
    """Read the primary header and the named image extensions, in one forward pass.

    Parameters
    ----------
    path : Path
        A FITS file, gzip-compressed or not (detected from its first bytes, not its name).
    extnames : iterable of str
        EXTNAMEs to read; matched without regard to case, as astropy does.

    Returns
    -------
    SelectedHdus
        The primary header, the named extensions, and the EXTNAMEs passed on the way.

    Raises
    ------
    MapsFileError
        If the file is missing, truncated, not gzip where it claims to be, or not FITS.
    MissingExtensionError
        If an extension is absent; the message lists the extensions the file has.
    """
    wanted = {name.upper() for name in extnames}
    found: dict[str, tuple[fits.Header, np.ndarray]] = {}
    seen: list[str] = []
    path = Path(path)
    try:
        with _open(path) as stream:
            primary = _read_header(stream, path)
            if primary is None:
                raise MapsFileError(f"{path}: the file is empty. Delete it and download it again.")
            _skip(stream, _data_size(primary), path)
            primary_header = primary.to_header()
            while wanted - found.keys():
                header = _read_header(stream, path)
                if header is None:
                    break
                name = header.extname
                seen.append(name)
                if name in wanted:
                    parsed = header.to_header()
                    found[name] = (parsed, _read_image(stream, header, parsed, path))
                else:
                    _skip(stream, _data_size(header), path)
    except FileNotFoundError as error:
        raise MapsFileError(f"{path}: no such file; download it first.") from error
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise MapsFileError(
            f"{path}: the gzip stream is truncated or corrupt ({error}). "
            "Delete the file and download it again."
        ) from error
    missing = sorted(wanted - found.keys())
    if missing:
        raise MissingExtensionError(
            f"{path}: no extension named {', '.join(missing)}; the file has "
            f"{len(seen)} extensions ({', '.join(seen[:8])}{', ...' if len(seen) > 8 else ''}). "
            "Is it a DAP MAPS file of the configured release?"
        )
    return SelectedHdus(primary_header, found, tuple(seen))
