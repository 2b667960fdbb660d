"""Broken MAPS files a synthetic release can plant (missing, truncated, hostile), and how."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

from manga_assets.atomic import write_bytes
from manga_assets.dap.datamodel import FLUX_EXTENSION
from manga_assets.synthetic.hostile import make_hostile
from manga_assets.synthetic.spec import FAULT_KINDS, HOSTILE_FAULT_KINDS

# How far into the EMLINE_GFLUX data a truncated file ends (share of that extension's data).
TRUNCATE_INTO_FLUX = 0.3


@dataclass(frozen=True)
class FaultRecipe:
    """How to write the MAPS file of a galaxy with a planted fault.

    Attributes
    ----------
    write : bool
        False: the file is missing from the tree although the catalogues list the galaxy.
    drop : tuple of str
        Extensions left out of the file.
    all_donotuse : bool
        Every pixel of every MASK extension carries DONOTUSE.
    truncate : bool
        The written file is cut short, inside the EMLINE_GFLUX data.
    hostile : str
        The written file is rebuilt as this kind of hostile file
        (:func:`manga_assets.synthetic.hostile.make_hostile`); '' for none.
    """

    write: bool = True
    drop: tuple[str, ...] = ()
    all_donotuse: bool = False
    truncate: bool = False
    hostile: str = ""


def fault_recipe(kind: str) -> FaultRecipe:
    """The recipe of fault ``kind`` ('none' for a healthy file)."""
    recipes = {
        "none": FaultRecipe(),
        "truncated_gzip": FaultRecipe(truncate=True),
        "missing_file": FaultRecipe(write=False),
        "no_gflux_hdu": FaultRecipe(drop=(FLUX_EXTENSION,)),
        "all_donotuse": FaultRecipe(all_donotuse=True),
        **{hostile: FaultRecipe(hostile=hostile) for hostile in HOSTILE_FAULT_KINDS},
    }
    if kind not in recipes:
        known = ", ".join(FAULT_KINDS + HOSTILE_FAULT_KINDS)
        raise ValueError(f"unknown fault {kind!r}; known: {known}")
    return recipes[kind]


def truncate_file(path: Path, uncompressed_offset: int) -> int:
    """Cut the gzip file ``path`` where its stream reaches ``uncompressed_offset``; return size.

    Cutting at a position of the uncompressed FITS stream (rather than at a share of the
    compressed bytes) puts the break inside a chosen extension whatever the compression ratio,
    so even a reader that stops after the extensions it needs meets the damage.
    """
    data = path.read_bytes()
    inflater = zlib.decompressobj(wbits=31)  # 31: expect a gzip header
    produced = consumed = 0
    chunk = 4096
    while consumed < len(data) and produced < uncompressed_offset:
        produced += len(inflater.decompress(data[consumed : consumed + chunk]))
        consumed += chunk
    size = min(consumed, len(data) - 1)
    with open(path, "r+b") as handle:
        handle.truncate(size)
    return size


def plant_hostile(path: Path, kind: str) -> int:
    """Rewrite the good ``.fits.gz`` file ``path`` as hostile file ``kind``; return its size."""
    hostile = make_hostile(gzip.decompress(path.read_bytes()), kind)
    write_bytes(path, hostile)
    return path.stat().st_size
