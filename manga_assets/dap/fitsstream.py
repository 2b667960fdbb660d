"""Forward-only reading of selected HDUs from a (gzipped) FITS file.

astropy can read a ``.fits.gz`` file, but every backward seek in a gzip stream starts the
decompression again from the top, and finding an extension by name walks every header before it.
A DAP MAPS file has 48-64 extensions and the pipeline needs three that lie halfway through, so
this module walks the stream once, parses each header with astropy, skips the data it does not
need, and stops as soon as it has what was asked for.

Nothing in a file is trusted, since a header declares its own sizes. Every header must be
printable ASCII in the FITS card syntax and end within :attr:`FitsLimits.max_header_blocks`;
BITPIX must be one of the six standard values, NAXIS 0-999, each NAXISn, PCOUNT and GCOUNT
non-negative integers, and the data size of an HDU at most :attr:`FitsLimits.max_hdu_bytes`;
the bytes inflated in all, and their ratio to the compressed bytes, are bounded too. A keyword
that sizes the data given twice with different values is refused: astropy itself takes the
last one for the data and the first for ``header[key]``. Other duplicates read as astropy reads
them (the first value). Every failure is a :class:`MapsFileError` naming the file and why.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from manga_assets.dap.errors import DapError, MapsFileError, MissingExtensionError

_BLOCK = 2880
_CARD = 80
_SKIP_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# The FITS standard allows at most 999 axes (NAXISn keywords have three digits).
_MAX_NAXIS = 999
_MIB = 1 << 20
# What a malformed header makes the parsers raise; each becomes a MapsFileError naming the file.
HEADER_PARSE_ERRORS = (ValueError, KeyError, TypeError, IndexError, OverflowError, VerifyError)


@dataclass(frozen=True)
class FitsLimits:
    """How much of a file the reader accepts before it calls the file hostile.

    A FITS header declares its own sizes, so without limits a few bytes can ask for terabytes
    (``NAXIS1 = 10**12``), a gzip stream of zeros can inflate without end, and a header without
    END can run to the end of the file. The defaults are far above what a DAP MAPS file needs: the
    real DR15 37-fibre file in ``shared/data/real/`` decompresses to 5 MB in 48 HDUs (4.2 times
    its gzip size), its largest HDU holds 0.3 MB and its longest header 146 cards; a DR17
    127-fibre file (64 HDUs, 35 emission lines, maps up to ~80x80) scales to ~30 MB, its largest
    HDU (46 spectral-index channels) to ~2.4 MB even in float64.

    Attributes
    ----------
    max_decompressed_bytes : int
        Bytes read from the (decompressed) stream in all; the setting ``MANGA_MAPS_MAX_BYTES``.
        Default 1 GiB.
    max_compression_ratio : float
        Past ``ratio_checked_after`` decompressed bytes, the most bytes a compressed byte may
        have inflated to on average. Float maps compress ~4:1; a gzip bomb ~1000:1. This is what
        stops a bomb in a fraction of a second rather than after ``max_decompressed_bytes``.
        Default 100.
    ratio_checked_after : int
        Default 32 MiB.
    max_hdu_bytes : int
        Data bytes one HDU may declare. Default 16 MiB.
    max_header_blocks : int
        2880-byte blocks one header may span before its END card. Default 100 (3,600 cards).
    max_hdus : int
        HDUs walked before the wanted ones must have been found. Default 1000 (DR17 has 64).
    """

    max_decompressed_bytes: int = 1 << 30
    max_compression_ratio: float = 100.0
    ratio_checked_after: int = 32 * _MIB
    max_hdu_bytes: int = 16 * _MIB
    max_header_blocks: int = 100
    max_hdus: int = 1000


DEFAULT_LIMITS = FitsLimits()
_HOSTILE = "no DAP MAPS file is like that, so it is treated as hostile (a gzip bomb or a corrupt "


class _BoundedStream:
    """A read-only stream that refuses to hand out more than the limits allow.

    Counting what is read, not what the gzip trailer claims, is what stops a gzip bomb: the
    trailer's length is the sender's word, modulo 2**32.
    """

    def __init__(
        self,
        stream: BinaryIO,
        limits: FitsLimits,
        path: Path,
        compressed_position: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream
        self._limits = limits
        self._path = path
        self._compressed_position = compressed_position
        self.position = 0

    def read(self, n_bytes: int) -> bytes:
        limits = self._limits
        if self.position + n_bytes > limits.max_decompressed_bytes:
            raise MapsFileError(
                f"{self._path}: the file holds more than {limits.max_decompressed_bytes:,} bytes "
                f"(decompressed) before the extensions the pipeline needs; {_HOSTILE}"
                "header). Delete it and download it again; if it is genuine, raise "
                "MANGA_MAPS_MAX_BYTES."
            )
        chunk = self._stream.read(n_bytes)
        self.position += len(chunk)
        if self._compressed_position is not None and self.position > limits.ratio_checked_after:
            compressed = max(self._compressed_position(), 1)
            if self.position / compressed > limits.max_compression_ratio:
                raise MapsFileError(
                    f"{self._path}: {self.position:,} bytes inflated from {compressed:,} "
                    f"compressed ones (a ratio of {self.position / compressed:.0f}, above "
                    f"{limits.max_compression_ratio:.0f}); {_HOSTILE}header). "
                    "Delete it and download it again."
                )
        return chunk


@contextmanager
def _open(path: Path, limits: FitsLimits) -> Iterator[_BoundedStream]:
    """``path`` as a bounded stream, inflated when its first bytes are gzip's magic number."""
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not is_gzip:
            yield _BoundedStream(raw, limits, path)
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
            yield _BoundedStream(inflated, limits, path, compressed_position=raw.tell)


_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class _RawHeader:
    """A header as read: its text, and the few structural keywords parsed without astropy."""

    text: str
    cards: dict[str, str]
    path: Path

    @property
    def extname(self) -> str:
        return self.cards.get("EXTNAME", "").strip("' ").upper()

    @property
    def xtension(self) -> str:
        return self.cards.get("XTENSION", "").strip("' ").upper()

    def integer(self, key: str, default: int | None = None) -> int:
        """The integer value of ``key``; missing (with no default) or not an integer is an error."""
        if key not in self.cards:
            if default is None:
                raise MapsFileError(
                    f"{self.path}: HDU {self.extname or 'PRIMARY'} lacks the mandatory keyword "
                    f"{key}; the file is not valid FITS. Delete it and download it again."
                )
            return default
        value = self.cards[key]
        if not _INTEGER.fullmatch(value):
            raise MapsFileError(
                f"{self.path}: HDU {self.extname or 'PRIMARY'} has {key} = {value!r}, not an "
                "integer; the file is corrupt. Delete it and download it again."
            )
        return int(value)

    def to_header(self) -> fits.Header:
        try:
            return fits.Header.fromstring(self.text)
        except HEADER_PARSE_ERRORS as error:
            raise MapsFileError(
                f"{self.path}: the header of HDU {self.extname or 'PRIMARY'} cannot be parsed "
                f"({error}); the file is corrupt. Delete it and download it again."
            ) from error


# A structural card: the keyword, '= ', a value, and nothing after it but an optional comment.
_STRUCTURAL_KEY = re.compile(rb"(SIMPLE|XTENSION|BITPIX|NAXIS[0-9]*|PCOUNT|GCOUNT|EXTNAME) *=")
_STRUCTURAL_CARD = re.compile(rb"([A-Z0-9]+) *= *('[^']*'|[^/ ]*) *(?:/.*)?", re.DOTALL)
# FITS headers are printable ASCII; anything else is damage, and astropy reads it leniently.
_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
# The card syntax of the FITS standard (section 4): a keyword of upper-case letters, digits, '-'
# and '_'; then, on a card with a value indicator ('= ' in bytes 9-10), a string, a logical, a
# number or a complex number (or nothing), and nothing after it but an optional comment.
# astropy calls other cards "unparsable" and, meeting one while it walks a file, treats the HDU
# as corrupted or stops, so it would not read what the reader reads: refuse them instead.
_KEYWORD = re.compile(rb"[A-Z0-9_-]* *")
_NUMBER = rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[EDed][+-]?[0-9]+)?"
_VALUE = re.compile(
    rb"= *(?:'(?:[^']|'')*'|[TF]|"
    + _NUMBER
    + rb"|\( *"
    + _NUMBER
    + rb" *, *"
    + _NUMBER
    + rb" *\))? *(?:/.*)?"
)


def _bad_card(raw: bytes) -> int | None:
    """Offset of the first card of ``raw`` that breaks the FITS card syntax, or None."""
    for start in range(0, len(raw), _CARD):
        if not _KEYWORD.fullmatch(raw, start, start + 8):
            return start
        if raw[start + 8 : start + 10] == b"= " and not _VALUE.fullmatch(
            raw, start + 8, start + _CARD
        ):
            return start
    return None


def _read_header(stream: _BoundedStream, path: Path, limits: FitsLimits) -> _RawHeader | None:
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
                f"{path}: the file ends inside a FITS header (no END card); it is truncated "
                "or corrupt. Delete it and download it again."
            )
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, _BLOCK, _CARD)):
            break
        if len(blocks) >= limits.max_header_blocks:
            raise MapsFileError(
                f"{path}: a header runs over {limits.max_header_blocks} blocks "
                f"({limits.max_header_blocks * _BLOCK // _CARD:,} cards) without an END card; "
                "no DAP header is that long, so the file is corrupt or hostile. Delete it and "
                "download it again."
            )
    first = blocks[0][:_CARD]
    if not (first.startswith(b"XTENSION=") or re.fullmatch(rb"SIMPLE  = +T( .*)?", first)):
        raise MapsFileError(
            f"{path}: not a FITS file (no 'SIMPLE = T' or XTENSION card where a header begins)"
        )
    raw = b"".join(blocks)
    damaged = _NOT_PRINTABLE.search(raw)
    if damaged:
        raise MapsFileError(
            f"{path}: a header holds the byte {damaged[0]!r} (card {damaged.start() // _CARD + 1}"
            "), which no FITS header may; the file is corrupt. Delete it and download it again."
        )
    bad = _bad_card(raw)
    if bad is not None:
        raise MapsFileError(
            f"{path}: the header card {raw[bad : bad + _CARD].decode().rstrip()!r} breaks the "
            "FITS card syntax; the file is corrupt. Delete it and download it again."
        )
    cards: dict[str, str] = {}
    for start in range(0, len(raw), _CARD):
        if not _STRUCTURAL_KEY.match(raw, start, start + _CARD):
            continue
        match = _STRUCTURAL_CARD.fullmatch(raw, start, start + _CARD)
        if not match:
            raise MapsFileError(
                f"{path}: the card {raw[start : start + _CARD].decode().rstrip()!r} is malformed "
                "(a value, then only a '/ comment' may follow); the size of the data cannot be "
                "known. Delete the file and download it again."
            )
        key, value = match[1].decode(), match[2].decode()
        earlier = cards.setdefault(key, value)
        if earlier != value:
            # astropy takes the last occurrence for the data's size and shape but the first
            # for ``header[key]``, so such a file has no single meaning: refuse it.
            raise MapsFileError(
                f"{path}: the keyword {key} appears twice in one header, as {earlier} and "
                f"{value}; the size of the data is ambiguous, so the file is refused. "
                "Delete it and download it again."
            )
    return _RawHeader(raw.decode("ascii"), cards, path)


def _data_size(header: _RawHeader, limits: FitsLimits) -> int:
    """Bytes of data following ``header``, padding to whole FITS blocks included.

    Every number is checked before it is used: NAXIS in 0..999, each NAXISn >= 0, BITPIX one of
    the six the standard allows, PCOUNT >= 0, GCOUNT >= 0, and the size at most
    ``limits.max_hdu_bytes``.
    """
    where = f"{header.path}: HDU {header.extname or 'PRIMARY'}"
    naxis = header.integer("NAXIS")
    bitpix = header.integer("BITPIX")
    if bitpix not in _DTYPES:
        raise MapsFileError(
            f"{where} has BITPIX = {bitpix}, not one of {sorted(_DTYPES)}; the file is corrupt. "
            "Delete it and download it again."
        )
    if not 0 <= naxis <= _MAX_NAXIS:
        raise MapsFileError(
            f"{where} has NAXIS = {naxis}, outside 0-{_MAX_NAXIS}; the file is corrupt. "
            "Delete it and download it again."
        )
    if naxis == 0:
        return 0
    axes = [header.integer(f"NAXIS{axis}") for axis in range(1, naxis + 1)]
    if any(length < 0 for length in axes):
        raise MapsFileError(
            f"{where} declares a negative axis length ({axes}); the file is corrupt. "
            "Delete it and download it again."
        )
    pcount, gcount = header.integer("PCOUNT", 0), header.integer("GCOUNT", 1)
    if pcount < 0 or gcount < 0:
        raise MapsFileError(
            f"{where} has PCOUNT = {pcount}, GCOUNT = {gcount}; neither may be negative. "
            "Delete the file and download it again."
        )
    # Python integers do not overflow; the early exit keeps 999 huge axes cheap.
    n_elements = 0 if 0 in axes else 1
    for length in axes:
        n_elements *= length
        if n_elements * abs(bitpix) // 8 > limits.max_hdu_bytes:
            break
    n_bytes = abs(bitpix) * gcount * (pcount + n_elements) // 8
    if n_bytes > limits.max_hdu_bytes:
        raise MapsFileError(
            f"{where} declares {n_bytes:,} bytes of data, more than the {limits.max_hdu_bytes:,} "
            "the reader accepts for one HDU (a DAP map is well under 10 MB); the file is corrupt "
            "or hostile. Delete it and download it again."
        )
    return -(-n_bytes // _BLOCK) * _BLOCK


def _read_exactly(stream: _BoundedStream, n_bytes: int, path: Path, what: str) -> bytearray:
    """``n_bytes`` from ``stream``, in chunks: a lying header cannot make us allocate them."""
    data = bytearray()
    while len(data) < n_bytes:
        chunk = stream.read(min(n_bytes - len(data), _SKIP_CHUNK))
        if not chunk:
            raise MapsFileError(
                f"{path}: the file ends inside {what}; it is truncated. "
                "Delete it and download it again."
            )
        data += chunk
    return data


def _skip(stream: _BoundedStream, n_bytes: int, path: Path) -> None:
    remaining = n_bytes
    while remaining > 0:
        chunk = stream.read(min(remaining, _SKIP_CHUNK))
        if not chunk:
            raise MapsFileError(
                f"{path}: the file ends inside an HDU's data; it is truncated. "
                "Delete it and download it again."
            )
        remaining -= len(chunk)


def _scale(header: fits.Header, key: str, default: float, path: Path) -> float:
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MapsFileError(
            f"{path}: extension {header.get('EXTNAME', '?')!r} has {key} = {value!r}, not a "
            "number; the file is corrupt. Delete it and download it again."
        )
    return value


def _read_image(
    stream: _BoundedStream,
    raw_header: _RawHeader,
    header: fits.Header,
    path: Path,
    limits: FitsLimits,
) -> np.ndarray:
    extname = raw_header.extname
    if raw_header.xtension != "IMAGE":
        raise MapsFileError(
            f"{path}: extension {extname} is a {raw_header.xtension or 'non-standard'} HDU, not "
            "an IMAGE; it is not a DAP MAPS file. Delete it and download it again."
        )
    padded = _data_size(raw_header, limits)
    naxis = raw_header.integer("NAXIS")
    shape = tuple(raw_header.integer(f"NAXIS{axis}") for axis in range(naxis, 0, -1))
    dtype = np.dtype(_DTYPES[raw_header.integer("BITPIX")])
    scale, zero = _scale(header, "BSCALE", 1, path), _scale(header, "BZERO", 0, path)
    raw = _read_exactly(stream, padded, path, f"the data of extension {extname!r}")
    if not shape:
        return np.empty((0,), dtype=dtype.newbyteorder("="))
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape)).reshape(shape)
    # In place: the buffer is ours, and a copy would double the memory a large map takes.
    data = data.byteswap(inplace=True).view(dtype.newbyteorder("="))
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


def read_hdus(
    path: Path, *, extnames: Iterable[str], limits: FitsLimits = DEFAULT_LIMITS
) -> SelectedHdus:
    """Read the primary header and the named image extensions, in one forward pass.

    Nothing in the file is trusted: sizes, counts and types are checked against the FITS
    standard and against ``limits`` before they are used, so a hostile file costs at most
    ``limits.max_decompressed_bytes`` of reading and never hangs.

    Parameters
    ----------
    path : Path
        A FITS file, gzip-compressed or not (detected from its first bytes, not its name).
    extnames : iterable of str
        EXTNAMEs to read; matched without regard to case, as astropy does.
    limits : FitsLimits, optional
        How much the file may make the reader read; default :data:`DEFAULT_LIMITS`.

    Returns
    -------
    SelectedHdus
        The primary header, the named extensions, and the EXTNAMEs passed on the way.

    Raises
    ------
    MapsFileError
        If the file is missing, truncated, not gzip where it claims to be, not FITS, malformed
        (a keyword of the wrong type or out of range, a header without END, a structural
        keyword given twice with different values), or larger than ``limits`` allow.
    MissingExtensionError
        If an extension is absent; the message lists the extensions the file has.
    """
    wanted = {name.upper() for name in extnames}
    found: dict[str, tuple[fits.Header, np.ndarray]] = {}
    seen: list[str] = []
    path = Path(path)
    try:
        with _open(path, limits) as stream:
            primary = _read_header(stream, path, limits)
            if primary is None:
                raise MapsFileError(f"{path}: the file is empty. Delete it and download it again.")
            _skip(stream, _data_size(primary, limits), path)
            primary_header = primary.to_header()
            while wanted - found.keys():
                header = _read_header(stream, path, limits)
                if header is None:
                    break
                name = header.extname
                seen.append(name)
                if len(seen) >= limits.max_hdus:
                    raise MapsFileError(
                        f"{path}: {len(seen):,} extensions passed without finding "
                        f"{', '.join(sorted(wanted - found.keys()))}; a DAP MAPS file has at "
                        "most 64. The file is corrupt or hostile; delete it and download it again."
                    )
                if name in wanted and name not in found:  # the first of a name, as astropy
                    parsed = header.to_header()
                    found[name] = (parsed, _read_image(stream, header, parsed, path, limits))
                else:
                    _skip(stream, _data_size(header, limits), path)
    except DapError:
        raise
    except FileNotFoundError as error:
        raise MapsFileError(f"{path}: no such file; download it first.") from error
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise MapsFileError(
            f"{path}: the gzip stream is truncated or corrupt ({error}). "
            "Delete the file and download it again."
        ) from error
    except HEADER_PARSE_ERRORS as error:
        # A safety net: every check above should come first, but no parse failure may escape
        # as anything other than this package's error.
        raise MapsFileError(
            f"{path}: the file cannot be parsed as FITS ({type(error).__name__}: {error}). "
            "Delete it and download it again."
        ) from error
    missing = sorted(wanted - found.keys())
    if missing:
        raise MissingExtensionError(
            f"{path}: no extension named {', '.join(missing)}; the file has "
            f"{len(seen)} extensions ({', '.join(seen[:8])}{', ...' if len(seen) > 8 else ''}). "
            "Is it a DAP MAPS file of the configured release?"
        )
    return SelectedHdus(primary_header, found, tuple(seen))
