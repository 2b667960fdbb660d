"""A fuzz harness for the MAPS reader: deterministic mutations of real headers, and an oracle.

Each mutation starts from a good MAPS file (the real DAP file in ``shared/data/real/`` and files
of the synthetic writer) and damages it the way a broken disk, a broken server or an attacker
would: truncation, huge, negative and ill-typed sizes, a missing END card, duplicated
keywords, channel keywords out of range, header bombs and gzip bombs. The oracle reads the
result with :func:`manga_assets.dap.maps.read_maps` under a time and memory budget and sorts
the outcome:

- ``typed``: a :class:`~manga_assets.dap.errors.DapError` (what the pipeline records);
- ``equal``: values equal to what astropy reads from the same bytes;
- ``unequal``: values that differ from astropy's (or astropy cannot read what we returned);
- ``untyped``: any other exception; ``hang``: over the time budget; ``over_memory``: over the
  memory budget (counted on top of the outcome).

The first two are the only acceptable ones. ``benchmarks/fits_fuzz.py`` runs 10,000.
"""

from __future__ import annotations

import functools
import gzip
import random
import signal
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable
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
    mask_value,
)
from manga_assets.dap.errors import DapError
from manga_assets.dap.maps import read_maps
from manga_assets.synthetic.hostile import (
    BLOCK,
    CARD,
    END_CARD,
    card,
    filler_extension,
    hdu_spans,
    raw_card,
)

READ = (FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION)
TIME_BUDGET_S = 2.0
MEMORY_BUDGET = 64 << 20
OUTCOMES = ("typed", "equal", "unequal", "untyped", "hang")


@dataclass(frozen=True)
class Seed:
    """A good file to mutate: its FITS bytes and the spans of its HDUs."""

    name: str
    fits_bytes: bytes
    spans: list[tuple[int, int, int]]

    @classmethod
    def from_file(cls, name: str, path: Path) -> Seed:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        spans = hdu_spans(data)
        # Only the HDUs up to the last one read matter to the reader; the rest only costs time.
        last = max(
            i for i, (start, end, _) in enumerate(spans) if _names(data, start, end) & set(READ)
        )
        end = spans[last][2]
        return cls(name, data[:end], spans[: last + 1])


def _names(data: bytes, start: int, end: int) -> set[str]:
    header = fits.Header.fromstring(data[start:end].decode("ascii"))
    return {str(header.get("EXTNAME", "")).strip()}


@dataclass(frozen=True)
class Mutation:
    """One damaged file: what was done, its bytes, and whether to write it gzip-compressed."""

    description: str
    data: bytes
    compress: bool = False
    # A gzip bomb is given as ready-made gzip bytes (members repeated), not compressed again.
    ready_gzip: bool = False


def _cards(seed: Seed, hdu: int) -> list[int]:
    """Byte offsets of the cards of HDU ``hdu``'s header, END excluded."""
    start, data_start, _ = seed.spans[hdu]
    offsets = []
    for offset in range(start, data_start, CARD):
        if seed.fits_bytes[offset : offset + CARD] == END_CARD:
            break
        offsets.append(offset)
    return offsets


def _replace(data: bytes, offset: int, new_card: bytes) -> bytes:
    return data[:offset] + new_card + data[offset + CARD :]


def _insert(data: bytes, offset: int, new_card: bytes) -> bytes:
    """A card inserted at ``offset``; the header keeps its length when its padding has room."""
    end = data.index(END_CARD, offset)
    blank = data.find(b" " * CARD, end + CARD)
    block_end = (end // BLOCK + 1) * BLOCK
    if 0 <= blank < block_end:
        return data[:offset] + new_card + data[offset:blank] + data[blank + CARD :]
    return data[:offset] + new_card + data[offset:end] + data[end:block_end] + b" " * (
        BLOCK - CARD
    ) + data[block_end:]  # fmt: skip


HUGE_VALUES = ("1000000000000", "9223372036854775807", "99999999999999999999999999999", "1000")
BAD_VALUES = ("'abc'", "1.5", "T", "''", "-", "1E3", "0x10", "1_0", "+7", " ")


def _structural(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(len(seed.spans))
    keys = []
    for offset in _cards(seed, hdu):
        key = seed.fits_bytes[offset : offset + 8].decode("ascii", "replace").strip()
        if key.startswith(("NAXIS", "BITPIX", "PCOUNT", "GCOUNT", "XTENSION")):
            keys.append((offset, key))
    offset, key = rng.choice(keys)
    kind = rng.choice(("huge", "negative", "bad", "small", "bitpix"))
    value = {
        "huge": lambda: rng.choice(HUGE_VALUES),
        "negative": lambda: str(-rng.choice((1, 2, 7, 2880, 10**12))),
        "bad": lambda: rng.choice(BAD_VALUES),
        "small": lambda: str(rng.randrange(0, 70)),
        "bitpix": lambda: str(rng.choice((7, 0, 1, 24, -16, 128, -8, 16, 32, -32, -64, 64, 8))),
    }[kind]()
    data = _replace(seed.fits_bytes, offset, raw_card(key, value))
    return Mutation(f"{seed.name}: HDU {hdu} {key} = {value}", data, compress=rng.random() < 0.3)


def _truncate(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(len(seed.spans))
    start, data_start, end = seed.spans[hdu]
    cut = rng.randrange(start, max(end, start + 1))
    return Mutation(
        f"{seed.name}: cut at {cut} (HDU {hdu})", seed.fits_bytes[:cut], rng.random() < 0.5
    )


def _no_end(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(len(seed.spans))
    start, data_start, _ = seed.spans[hdu]
    end = seed.fits_bytes.index(END_CARD, start)
    data = _replace(seed.fits_bytes, end, b" " * CARD)
    if rng.random() < 0.5:
        # Remove every END card: the file is one endless header.
        data = data.replace(END_CARD, b" " * CARD)
    return Mutation(f"{seed.name}: no END in HDU {hdu}", data, compress=rng.random() < 0.5)


def _duplicate(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(len(seed.spans))
    offsets = _cards(seed, hdu)
    source = rng.choice(offsets)
    copied = seed.fits_bytes[source : source + CARD]
    key = copied[:8].decode("ascii", "replace").strip()
    if rng.random() < 0.5 and copied[8:10] == b"= ":
        # The same keyword with another value.
        copied = raw_card(key, rng.choice((*BAD_VALUES, "0", "3", "12", "'Ha-6564'", "'OTHER'")))
    where = rng.choice(offsets[offsets.index(source) :] + [offsets[-1] + CARD])
    data = _insert(seed.fits_bytes, where, copied)
    return Mutation(f"{seed.name}: HDU {hdu} {key} twice", data, compress=rng.random() < 0.3)


def _channel(rng: random.Random, seed: Seed) -> Mutation:
    candidates = [
        (hdu, offset)
        for hdu in range(len(seed.spans))
        for offset in _cards(seed, hdu)
        if seed.fits_bytes[offset : offset + 1] == b"C"
        and seed.fits_bytes[offset + 1 : offset + 8].strip().isdigit()
    ]
    hdu, offset = rng.choice(candidates)
    value = seed.fits_bytes[offset + 10 : offset + CARD].split(b"/")[0].decode("ascii").strip()
    key = rng.choice(("C0", "C00", "C99", "C999", "C1", "C02", "C-1"))
    data = _replace(seed.fits_bytes, offset, raw_card(key, value))
    return Mutation(f"{seed.name}: HDU {hdu} channel {key} = {value}", data)


def _flip(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(len(seed.spans))
    start, data_start, _ = seed.spans[hdu]
    data = bytearray(seed.fits_bytes)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(start, data_start)] = rng.randrange(256)
    return Mutation(f"{seed.name}: bytes flipped in header {hdu}", bytes(data), rng.random() < 0.3)


def _header_bomb(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(1, len(seed.spans))
    start = seed.spans[hdu][0]
    blocks = rng.choice((101, 1000, 40_000))
    comments = card("COMMENT", "x" * 60) * (BLOCK // CARD)
    head = seed.fits_bytes[: start + 10 * CARD]  # ten cards of the header, then the bomb
    rest = seed.fits_bytes[start + 10 * CARD :]
    data = _gzip([(head, 1), (comments * 100, blocks // 100 + 1), (rest, 1)])
    return Mutation(f"{seed.name}: {blocks} COMMENT blocks in HDU {hdu}", data, ready_gzip=True)


def _gzip_bomb(rng: random.Random, seed: Seed) -> Mutation:
    hdu = rng.randrange(1, len(seed.spans))
    start = seed.spans[hdu][0]
    filler_bytes = rng.choice((2880 * 100, 1 << 20, 8 << 20, 15 << 20))
    filler = filler_extension(filler_bytes)
    count = rng.choice((1, 10, 200, 2000)) if filler_bytes < (8 << 20) else rng.choice((5, 100))
    pieces = [(seed.fits_bytes[:start], 1), (filler, count), (seed.fits_bytes[start:], 1)]
    data = _gzip(pieces)
    return Mutation(
        f"{seed.name}: {count} x {filler_bytes} zero bytes before HDU {hdu}", data, ready_gzip=True
    )


@functools.lru_cache(maxsize=16)
def _member(data: bytes) -> bytes:
    """``data`` as one gzip member, compressed hard once (bomb fillers repeat it many times)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def _gzip(pieces: list[tuple[bytes, int]]) -> bytes:
    """A gzip file of (bytes, repeat) pieces; repeated pieces are cached members."""
    return b"".join(
        _member(data) * repeat if repeat > 1 else gzip.compress(data, compresslevel=1, mtime=0)
        for data, repeat in pieces
    )


MUTATORS: dict[str, Callable[[random.Random, Seed], Mutation]] = {
    "structural": _structural,
    "truncate": _truncate,
    "no_end": _no_end,
    "duplicate": _duplicate,
    "channel": _channel,
    "flip": _flip,
    "header_bomb": _header_bomb,
    "gzip_bomb": _gzip_bomb,
}
# Bombs are slower to build and read; they come less often.
WEIGHTS = {"header_bomb": 0.3, "gzip_bomb": 0.3}


def mutations(seeds: list[Seed], count: int, seed: int = 0):
    """``count`` deterministic mutations of ``seeds`` as (mutator name, Mutation)."""
    rng = random.Random(seed)
    names = list(MUTATORS)
    weights = [WEIGHTS.get(name, 1.0) for name in names]
    for _ in range(count):
        name = rng.choices(names, weights)[0]
        yield name, MUTATORS[name](rng, rng.choice(seeds))


def write_mutation(mutation: Mutation, path: Path) -> Path:
    if mutation.ready_gzip:
        path.write_bytes(mutation.data)
    elif mutation.compress:
        path.write_bytes(gzip.compress(mutation.data, compresslevel=1, mtime=0))
    else:
        path.write_bytes(mutation.data)
    return path


class _Expired(BaseException):
    """Raised by the timer; a BaseException, so no ``except Exception`` in the reader eats it."""


@dataclass(frozen=True)
class Verdict:
    outcome: str
    seconds: float
    peak_bytes: int
    detail: str = ""

    @property
    def acceptable(self) -> bool:
        return self.outcome in ("typed", "equal") and self.peak_bytes <= MEMORY_BUDGET


def judge(path: Path) -> Verdict:
    """Read ``path`` under the budget and compare a successful read with astropy's."""
    import time

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    tracemalloc.start()
    started = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, TIME_BUDGET_S)
    maps = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = read_maps(path)
        outcome, detail = "ok", ""
    except DapError as error:
        outcome, detail = "typed", str(error)
    except _Expired:
        outcome, detail = "hang", f"over {TIME_BUDGET_S} s"
    except Exception as error:  # noqa: BLE001 - the harness counts exactly these
        outcome, detail = "untyped", f"{type(error).__name__}: {error}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if outcome == "ok":
        outcome, detail = _compare_with_astropy(path, maps)
    return Verdict(outcome, seconds, peak, detail)


def _compare_with_astropy(path: Path, maps) -> tuple[str, str]:
    """('equal', '') when astropy reads the same maps and primary values from ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path) as hdus:
                primary = hdus[0].header
                arrays = {}
                for name in READ:
                    header = hdus[name].header
                    channels = {str(header[k]).strip(): int(k[1:]) - 1 for k in header if
                                k.startswith("C") and k[1:].isdigit()}  # fmt: skip
                    arrays[name] = np.asarray(hdus[name].data)[[channels[n] for n in PROJECT_LINES]]
                scalars = (
                    str(primary.get("VERSDAP", "")).strip(),
                    str(primary.get("PLATEIFU", "")).strip(),
                )
    except Exception as error:  # noqa: BLE001 - astropy's failure is a disagreement
        return (
            "unequal",
            f"astropy cannot read what read_maps returned: {type(error).__name__}: {error}",
        )
    flux, ivar, bits = (arrays[name] for name in READ)
    bits = bits.astype(np.int64)
    invalid = ((bits & mask_value(DEFAULT_INVALID_BITS)) != 0) | (ivar <= 0)
    invalid |= ~(np.isfinite(flux) & np.isfinite(ivar))
    checks = {
        "mask bits": np.array_equal(maps.mask_bits, bits),
        "invalid": np.array_equal(maps.invalid, invalid),
        "flux": np.array_equal(maps.flux, np.where(invalid, 0, flux).astype(np.float32)),
        "ivar": np.array_equal(maps.ivar, np.where(invalid, 0, ivar).astype(np.float32)),
        "primary": (maps.dapver, maps.plateifu) == scalars,
    }
    differing = [name for name, same in checks.items() if not same]
    return (
        ("unequal", f"differs from astropy in {', '.join(differing)}")
        if differing
        else ("equal", "")
    )


def run_fuzz(seeds: list[Seed], count: int, directory: Path, seed: int = 0, on_bad=None) -> Counter:
    """Run ``count`` mutations; return counts per outcome and per mutator, and over-memory."""
    counts: Counter = Counter()
    for index, (name, mutation) in enumerate(mutations(seeds, count, seed)):
        path = write_mutation(mutation, directory / f"m{index % 4}.fits")
        verdict = judge(path)
        counts[verdict.outcome] += 1
        counts[f"{name}:{verdict.outcome}"] += 1
        if verdict.peak_bytes > MEMORY_BUDGET:
            counts["over_memory"] += 1
        counts["max_seconds_x1000"] = max(counts["max_seconds_x1000"], int(verdict.seconds * 1000))
        counts["max_peak_mib"] = max(counts["max_peak_mib"], verdict.peak_bytes >> 20)
        if not verdict.acceptable and on_bad is not None:
            on_bad(mutation, verdict)
    return counts
