"""Hostile MAPS files: small on disk, built to hang or exhaust a reader that trusts their headers.

Each builder takes the uncompressed bytes of a good MAPS file and returns a ``.fits.gz`` file's
bytes. A run of identical bytes is compressed once and its gzip member repeated (a gzip file may
hold any number of members, read back to back as one stream), so a gigabyte of zeros costs a
millisecond and a kilobyte to build.

- ``header_bomb``: an extension whose header runs ~94 MB of COMMENT cards before its END.
- ``no_end_card``: a primary header that never ends (64 MiB of blank cards, no END).
- ``gzip_bomb``: 1 GiB of zero-filled extensions, each of an honest size, before the maps.
- ``huge_naxis``: a primary header declaring ``NAXIS = 10**12`` axes.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

from astropy.io import fits

from manga_assets.synthetic.spec import HOSTILE_FAULT_KINDS

BLOCK = 2880
CARD = 80
END_CARD = b"END".ljust(CARD)
_MIB = 1 << 20


def card(key: str, value: object) -> bytes:
    """One 80-byte header card ``key = value``, the value written as FITS writes it."""
    return str(fits.Card(key, value)).encode("ascii")


def raw_card(key: str, value_text: str) -> bytes:
    """One 80-byte card with ``value_text`` written verbatim (so it can be invalid)."""
    return f"{key:<8}= {value_text:>20}".ljust(CARD)[:CARD].encode("ascii")


def header_block(cards: list[bytes], *, end: bool = True) -> bytes:
    """Header cards (with an END card unless ``end`` is False), padded to whole blocks."""
    text = b"".join(cards) + (END_CARD if end else b"")
    return text.ljust(-(-len(text) // BLOCK) * BLOCK, b" ")


def hdu_spans(fits_bytes: bytes) -> list[tuple[int, int, int]]:
    """(header start, data start, end) of every HDU of a well-formed FITS file."""
    spans = []
    start = 0
    while start < len(fits_bytes):
        end_card = start
        while True:
            block = fits_bytes[end_card : end_card + BLOCK]
            end_card += BLOCK
            if any(block[i : i + 8] == b"END     " for i in range(0, BLOCK, CARD)):
                break
        header = fits.Header.fromstring(fits_bytes[start:end_card].decode("ascii"))
        n_elements = 1
        for axis in range(1, header["NAXIS"] + 1):
            n_elements *= header[f"NAXIS{axis}"]
        n_elements = n_elements if header["NAXIS"] else 0
        n_bytes = abs(header["BITPIX"]) // 8 * header.get("GCOUNT", 1)
        n_bytes *= header.get("PCOUNT", 0) + n_elements
        data_end = end_card + -(-n_bytes // BLOCK) * BLOCK
        spans.append((start, end_card, data_end))
        start = data_end
    return spans


def gzip_members(pieces: Iterator[tuple[bytes, int]]) -> bytes:
    """A gzip file of ``pieces``: each (bytes, repeat) compressed once, its member repeated."""
    out = []
    for data, repeat in pieces:
        out.append(gzip.compress(data, compresslevel=9, mtime=0) * repeat)
    return b"".join(out)


def _primary_and_rest(fits_bytes: bytes) -> tuple[bytes, bytes]:
    (_, _, primary_end), *_ = hdu_spans(fits_bytes)
    return fits_bytes[:primary_end], fits_bytes[primary_end:]


def header_bomb(fits_bytes: bytes, *, comment_blocks: int = 32768) -> bytes:
    """The file with an extension before the maps whose header is ``comment_blocks`` long."""
    primary, rest = _primary_and_rest(fits_bytes)
    start = [
        card("XTENSION", "IMAGE"),
        card("BITPIX", 8),
        card("NAXIS", 0),
        card("PCOUNT", 0),
        card("GCOUNT", 1),
        card("EXTNAME", "BOMB"),
    ]
    comments = b"".join(card("COMMENT", "x" * 60) for _ in range(BLOCK // CARD))
    group = 256  # blocks per repeated member
    return gzip_members(
        iter(
            [
                (primary + header_block(start, end=False), 1),
                (comments * group, comment_blocks // group),
                (header_block([]) + rest, 1),
            ]
        )
    )


def no_end_card(fits_bytes: bytes, *, blank_bytes: int = 64 * _MIB) -> bytes:
    """A primary header without END, followed by ``blank_bytes`` of blank cards and nothing."""
    primary, _ = _primary_and_rest(fits_bytes)
    header = primary[: primary.index(END_CARD)]
    padded = header.ljust(-(-len(header) // BLOCK) * BLOCK, b" ")
    group = 16 * BLOCK * 64
    return gzip_members(iter([(padded, 1), (b" " * group, max(1, blank_bytes // group))]))


def gzip_bomb(fits_bytes: bytes, *, fillers: int = 128, filler_bytes: int = 8 * _MIB) -> bytes:
    """The file with ``fillers`` zero-filled extensions of ``filler_bytes`` each before the maps.

    Every header is honest, so only a limit on the bytes inflated (or on their ratio to the
    compressed bytes) stops a reader: 1 GiB by default, from about 1 MB on disk.
    """
    primary, rest = _primary_and_rest(fits_bytes)
    return gzip_members(iter([(primary, 1), (filler_extension(filler_bytes), fillers), (rest, 1)]))


def filler_extension(filler_bytes: int) -> bytes:
    """An honest IMAGE extension of ``filler_bytes`` zero bytes, padded to whole blocks."""
    header = header_block(
        [
            card("XTENSION", "IMAGE"),
            card("BITPIX", 8),
            card("NAXIS", 1),
            card("NAXIS1", filler_bytes),
            card("PCOUNT", 0),
            card("GCOUNT", 1),
            card("EXTNAME", "FILLER"),
        ]
    )
    return header + bytes(-(-filler_bytes // BLOCK) * BLOCK)


def huge_naxis(fits_bytes: bytes, *, naxis: int = 10**12) -> bytes:
    """The file with its primary header's NAXIS set to ``naxis`` (far beyond the standard's 999)."""
    return gzip_members(iter([(set_card(fits_bytes, "NAXIS", str(naxis)), 1)]))


def set_card(fits_bytes: bytes, key: str, value_text: str, *, hdu_start: int = 0) -> bytes:
    """``fits_bytes`` with the first ``key`` card of the header at ``hdu_start`` rewritten."""
    prefix = f"{key:<8}=".encode("ascii")
    position = hdu_start
    while fits_bytes[position : position + CARD] != END_CARD:
        if fits_bytes[position : position + 9] == prefix:
            replaced = raw_card(key, value_text)
            return fits_bytes[:position] + replaced + fits_bytes[position + CARD :]
        position += CARD
    raise ValueError(f"no {key} card in the header at byte {hdu_start}")


BUILDERS = {
    "header_bomb": header_bomb,
    "no_end_card": no_end_card,
    "gzip_bomb": gzip_bomb,
    "huge_naxis": huge_naxis,
}


def make_hostile(fits_bytes: bytes, kind: str) -> bytes:
    """The ``.fits.gz`` bytes of hostile file ``kind`` built from a good file's FITS bytes."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown hostile kind {kind!r}; known: {', '.join(HOSTILE_FAULT_KINDS)}")
    return BUILDERS[kind](fits_bytes)
