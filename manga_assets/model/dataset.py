"""The training set: every usable cube, normalised, in one memory-mapped array with an index.

On disk, a training-set directory holds:

- ``flux.npy``: float32 (N, L, H, W), normalised maps (`manga_assets.model.normalise`), invalid
  pixels 0;
- ``valid.npy``: bool (N, L, H, W), True where the pixel is usable;
- ``weight.npy``: float32 (N, L, H, W), the inverse variance in the galaxy's normalised linear
  units, IVAR * scale^2, 0 where invalid (the chi-square loss weighs every pixel by it);
- ``index.parquet``: one row per galaxy: ``plateifu``, ``row`` (into the arrays), ``split``
  ("train" or "val"), ``n_valid_pixels``, ``scale`` (the normalisation scale, in
  1E-17 erg/s/cm^2/spaxel);
- ``meta.json``: lines, grid, normalisation, seed, validation fraction, excluded cubes, a
  fingerprint of the contents (training checkpoints remember it, to resume only on the same data),
  and ``made_from``: what the caller says the set was built from (the pipeline records its cubes'
  digest there, so a later run can tell from the set alone whether it is current).

The split of a galaxy depends only on the seed and its plate-IFU (a hash), so adding galaxies later
never moves an existing galaxy between train and validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from manga_assets.atomic import (
    replace_directory,
    reserve_space,
    resolve_published,
    temporary_directory,
)

# A cube that does not fit the training set raises the cube reader's error (re-exported).
from manga_assets.cubes.cube_file import CubeFormatError as CubeFormatError
from manga_assets.cubes.cube_file import read_cube as read_cube_file
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.normalise import Normalisation, galaxy_scale, normalise, valid_pixels

FORMAT_VERSION = 2
SPLITS = ("train", "val")


class TrainingSetError(ValueError):
    """A training-set directory that is missing, incomplete, or does not fit the model."""


@dataclass(frozen=True)
class ExcludedCube:
    """A cube left out of the training set, and why."""

    plateifu: str
    path: str
    reason: str


@dataclass
class TrainingSetSummary:
    """What `build_training_set` wrote.

    Attributes
    ----------
    path : Path
        The training-set directory.
    n_galaxies, n_train, n_val : int
        Galaxies kept, and in each split.
    excluded : list of ExcludedCube
        Cubes left out (e.g. every pixel invalid).
    line_names : tuple of str
    grid : int
    normalisation : Normalisation
    fingerprint : str
        SHA-256 of the contents and parameters.
    """

    path: Path
    n_galaxies: int
    n_train: int
    n_val: int
    excluded: list[ExcludedCube]
    line_names: tuple[str, ...]
    grid: int
    normalisation: Normalisation
    fingerprint: str

    def to_metadata(self) -> dict:
        """JSON-safe summary, e.g. for asset metadata."""
        return {
            "path": str(self.path),
            "n_galaxies": self.n_galaxies,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_excluded": len(self.excluded),
            "excluded": [asdict(cube) for cube in self.excluded],
            "grid": self.grid,
            "normalisation": self.normalisation.to_dict(),
            "fingerprint": self.fingerprint,
        }


def read_cube(
    path: Path | str,
    plateifu: str,
    *,
    line_names: tuple[str, ...] | list[str] = PROJECT_LINES,
    grid: int | None = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(flux, ivar, mask)`` of one cube, read and checked by
    :func:`manga_assets.cubes.cube_file.read_cube` against the model's lines and grid.

    Raises
    ------
    CubeFormatError
        If the file cannot be read, lacks an array, or has other lines or another grid.
    """
    cube = read_cube_file(path, plateifu=plateifu, line_names=line_names, grid=grid)
    return cube.flux, cube.ivar, cube.mask


def noise_weight(ivar: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
    """Inverse variance of x = flux / scale: IVAR * scale^2 on valid pixels, 0 elsewhere."""
    weight = np.where(valid, np.asarray(ivar, dtype=np.float64) * scale**2, 0.0)
    return weight.astype(np.float32)


def split_of(plateifu: str, seed: int, val_fraction: float) -> str:
    """The split of a galaxy: a function of the seed and its plate-IFU only."""
    return "val" if _unit_hash(plateifu, seed) < val_fraction else "train"


def _unit_hash(plateifu: str, seed: int) -> float:
    """A number uniform in [0, 1), fixed by seed and plate-IFU (Python's hash() is salted)."""
    digest = hashlib.sha256(f"{seed}:{plateifu}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _assign_splits(plateifus: list[str], seed: int, val_fraction: float) -> list[str]:
    """Hash splits, but never an empty split when two or more galaxies allow both."""
    splits = [split_of(plateifu, seed, val_fraction) for plateifu in plateifus]
    if len(splits) >= 2 and val_fraction > 0:
        hashes = [_unit_hash(plateifu, seed) for plateifu in plateifus]
        # Tiny sets only: moving the galaxy whose hash is nearest the threshold keeps the choice
        # deterministic, and it stops mattering once the hash split is non-empty.
        if "val" not in splits:
            splits[int(np.argmin(hashes))] = "val"
        if "train" not in splits:
            splits[int(np.argmax(hashes))] = "train"
    return splits


def build_training_set(
    cubes: Iterable[tuple[str, Path]],
    out_dir: Path,
    *,
    grid: int = 32,
    seed: int = 0,
    val_fraction: float = 0.15,
    normalisation: Normalisation | None = None,
    line_names: tuple[str, ...] | list[str] = PROJECT_LINES,
    log: Callable[[str], None] | None = None,
    made_from: dict | None = None,
) -> TrainingSetSummary:
    """Normalise every usable cube into one memory-mapped training set.

    Cubes are read and written one at a time (the arrays grow on disk through
    ``np.lib.format.open_memmap``), so memory stays flat however many galaxies there are. The
    directory is written under a temporary name and renamed into place at the end, so a crash never
    leaves a half-written training set at ``out_dir``.

    Parameters
    ----------
    cubes : iterable of (plateifu, path)
        The cube files (see `read_cube`).
    out_dir : Path
        Directory to create or replace.
    grid : int
        Map side every cube must have (default 32).
    seed : int
        Seed of the train/validation split.
    val_fraction : float
        Expected fraction of galaxies in the validation split (default 0.15).
    normalisation : Normalisation, optional
        Defaults to ``Normalisation()``; must match the model configuration's.
    line_names : sequence of str
        Lines, in order, that every cube must hold (default the 19 project lines).
    log : callable, optional
        Receives progress messages.
    made_from : dict, optional
        JSON-safe record of the inputs, stored as ``meta.json["made_from"]`` in the same
        atomic publication as the arrays (not part of the fingerprint, which is of the contents).

    Returns
    -------
    TrainingSetSummary

    Raises
    ------
    CubeFormatError
        If a cube has other lines or another grid (the message names the plate-IFU and file).
    TrainingSetError
        If a plate-IFU repeats or no cube is usable.
    DiskFullError
        If the disk has no room for the arrays (nothing is left behind).
    """
    normalisation = normalisation or Normalisation()
    line_names = tuple(line_names)
    log = log or (lambda message: None)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cube_list = _unique_cubes(cubes)
    parameters = {
        "line_names": list(line_names),
        "grid": grid,
        "seed": seed,
        "val_fraction": val_fraction,
        "normalisation": normalisation.to_dict(),
    }
    out_dir = Path(out_dir)
    tmp_dir = temporary_directory(out_dir)
    try:
        content_hash = hashlib.sha256()
        rows, excluded = _write_arrays(
            cube_list, tmp_dir, line_names, grid, normalisation, content_hash, log
        )
        index = _write_index(tmp_dir, rows, seed, val_fraction)
        meta = _write_meta(tmp_dir, index, parameters, excluded, content_hash, made_from)
        replace_directory(tmp_dir, out_dir, durable=True)  # existing means done: fsync first
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log(
        f"training set: {meta['n_galaxies']} galaxies ({meta['n_train']} train, "
        f"{meta['n_val']} val), {len(excluded)} excluded, at {out_dir}"
    )
    return TrainingSetSummary(
        path=out_dir,
        n_galaxies=meta["n_galaxies"],
        n_train=meta["n_train"],
        n_val=meta["n_val"],
        excluded=excluded,
        line_names=line_names,
        grid=grid,
        normalisation=normalisation,
        fingerprint=meta["fingerprint"],
    )


def _write_meta(
    directory: Path,
    index: pd.DataFrame,
    parameters: dict,
    excluded: list[ExcludedCube],
    content_hash,
    made_from: dict | None,
) -> dict:
    """Write ``meta.json``; the fingerprint covers the arrays (already in ``content_hash``, row by
    row), the parameters and the split."""
    content_hash.update(json.dumps(parameters, sort_keys=True).encode())
    content_hash.update(index["split"].str.cat().encode())
    meta = {
        "format_version": FORMAT_VERSION,
        **parameters,
        "n_galaxies": len(index),
        "n_train": int((index["split"] == "train").sum()),
        "n_val": int((index["split"] == "val").sum()),
        "excluded": [asdict(cube) for cube in excluded],
        "fingerprint": content_hash.hexdigest(),
        "made_from": made_from,
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _unique_cubes(cubes: Iterable[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The (plateifu, path) pairs as a list; a repeated plate-IFU or no cube at all is refused."""
    cube_list = [(str(plateifu), Path(path)) for plateifu, path in cubes]
    seen: set[str] = set()
    for plateifu, _ in cube_list:
        if plateifu in seen:
            raise TrainingSetError(f"plate-IFU {plateifu} appears twice in the cube list")
        seen.add(plateifu)
    if not cube_list:
        raise TrainingSetError("no cubes were given to build the training set from")
    return cube_list


def _write_arrays(
    cube_list: list[tuple[str, Path]],
    directory: Path,
    line_names: tuple[str, ...],
    grid: int,
    normalisation: Normalisation,
    content_hash,
    log: Callable[[str], None],
) -> tuple[list[dict], list[ExcludedCube]]:
    """Normalise each cube into the flux, valid and weight arrays of ``directory``, one at a time.

    Returns the index rows of the kept galaxies and the excluded cubes; each kept galaxy's name
    and arrays are added to ``content_hash``. The arrays are trimmed to the kept rows.
    """
    n_max = len(cube_list)
    shape = (n_max, len(line_names), grid, grid)
    flux_out = _new_array(directory / "flux.npy", np.float32, shape)
    valid_out = _new_array(directory / "valid.npy", np.bool_, shape)
    weight_out = _new_array(directory / "weight.npy", np.float32, shape)
    rows: list[dict] = []
    excluded: list[ExcludedCube] = []
    for number, (plateifu, path) in enumerate(cube_list, start=1):
        flux, ivar, mask = read_cube(path, plateifu, line_names=line_names, grid=grid)
        valid = valid_pixels(flux, mask, ivar)
        n_valid = int(valid.sum())
        if n_valid == 0:
            excluded.append(ExcludedCube(plateifu, str(path), "every pixel is invalid"))
            continue
        scale = galaxy_scale(flux, valid, line_names, normalisation)
        row = len(rows)
        flux_out[row] = normalise(flux, valid, scale, normalisation)
        valid_out[row] = valid
        weight_out[row] = noise_weight(ivar, valid, scale)
        for part in (plateifu.encode(), flux_out[row], valid, weight_out[row]):
            content_hash.update(part if isinstance(part, bytes) else part.tobytes())
        rows.append({"plateifu": plateifu, "row": row, "n_valid_pixels": n_valid, "scale": scale})
        if number % 1000 == 0:
            log(f"training set: {number}/{n_max} cubes read")
    for array in (flux_out, valid_out, weight_out):
        array.flush()
    # The memory maps are closed before the files are trimmed (replaced) below.
    del flux_out, valid_out, weight_out, array
    if not rows:
        reasons = "; ".join(f"{cube.plateifu}: {cube.reason}" for cube in excluded[:10])
        raise TrainingSetError(f"none of the {n_max} cubes is usable for training ({reasons})")
    if len(rows) < n_max:
        for name in ("flux.npy", "valid.npy", "weight.npy"):
            _truncate_rows(directory, name, len(rows))
    return rows, excluded


def _write_index(directory: Path, rows: list[dict], seed: int, val_fraction: float) -> pd.DataFrame:
    """Write ``index.parquet``: the kept galaxies, their rows, splits, valid pixels and scales."""
    index = pd.DataFrame(rows, columns=["plateifu", "row", "n_valid_pixels", "scale"])
    index.insert(2, "split", _assign_splits(list(index["plateifu"]), seed, val_fraction))
    index = index.astype({"row": "int64", "n_valid_pixels": "int64", "scale": "float64"})
    index.to_parquet(directory / "index.parquet", index=False)
    return index


def _new_array(path: Path, dtype: type, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy memory map whose disk blocks are reserved now.

    Pages of a memory map are written long after it is made; on a full disk such a write is a
    SIGBUS that kills the step with no message and leaves the temporary directory behind.
    Reserving the blocks first fails with a DiskFullError instead, which the caller cleans up.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        reserve_space(path, path.stat().st_size)
    except BaseException:
        del array
        raise
    return array


def _truncate_rows(directory: Path, name: str, n_rows: int, chunk: int = 512) -> None:
    """Keep the first ``n_rows`` rows of a .npy file (copied chunk by chunk, never all in RAM)."""
    source_path = directory / name
    target_path = directory / f"{name}.part"
    source = np.load(source_path, mmap_mode="r")
    target = _new_array(target_path, source.dtype, (n_rows, *source.shape[1:]))
    for start in range(0, n_rows, chunk):
        target[start : start + chunk] = source[start : min(start + chunk, n_rows)]
    target.flush()
    del source, target
    os.replace(target_path, source_path)


@dataclass
class TrainingSet:
    """An opened training set: read-only memory maps and the index.

    Attributes
    ----------
    path : Path
    flux : numpy.memmap, float32 (N, L, H, W)
    valid : numpy.memmap, bool (N, L, H, W)
    weight : numpy.memmap, float32 (N, L, H, W)
        Inverse variance in normalised linear units (IVAR * scale^2).
    index : pandas.DataFrame
        Columns plateifu, row, split, n_valid_pixels, scale.
    meta : dict
        The contents of meta.json.
    """

    path: Path
    flux: np.ndarray
    valid: np.ndarray
    weight: np.ndarray
    index: pd.DataFrame
    meta: dict = field(repr=False)

    @property
    def line_names(self) -> tuple[str, ...]:
        return tuple(self.meta["line_names"])

    @property
    def grid(self) -> int:
        return int(self.meta["grid"])

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation(**self.meta["normalisation"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def rows(self, split: str) -> np.ndarray:
        """Array rows of one split, ascending."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.sort(self.index.loc[self.index["split"] == split, "row"].to_numpy())

    def plateifus(self, rows: Iterable[int]) -> list[str]:
        """Plate-IFUs of array rows."""
        by_row = self.index.set_index("row")["plateifu"]
        return [str(by_row.loc[int(row)]) for row in rows]


def open_training_set(path: Path | str) -> TrainingSet:
    """Open a directory written by `build_training_set` (arrays memory-mapped, read-only).

    A published training set is a link to its current version; it is resolved once, so all five
    files come from the same version even if a new one is published while they are opened.

    Raises
    ------
    TrainingSetError
        If a file is missing or the arrays and index disagree.
    """
    path = resolve_published(path)
    names = ("flux.npy", "valid.npy", "weight.npy", "index.parquet", "meta.json")
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise TrainingSetError(
            f"training set at {path} lacks {missing}; rebuild it (build_training_set / the "
            f"training_set asset)"
        )
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise TrainingSetError(
            f"training set at {path} has format version {meta.get('format_version')}, this code "
            f"reads version {FORMAT_VERSION}; rebuild it"
        )
    flux = np.load(path / "flux.npy", mmap_mode="r", allow_pickle=False)
    valid = np.load(path / "valid.npy", mmap_mode="r", allow_pickle=False)
    weight = np.load(path / "weight.npy", mmap_mode="r", allow_pickle=False)
    index = pd.read_parquet(path / "index.parquet")
    if flux.shape != valid.shape or flux.shape != weight.shape or flux.shape[0] != len(index):
        raise TrainingSetError(
            f"training set at {path} is inconsistent: flux {flux.shape}, valid {valid.shape}, "
            f"weight {weight.shape}, {len(index)} index rows; rebuild it"
        )
    return TrainingSet(path=path, flux=flux, valid=valid, weight=weight, index=index, meta=meta)


@dataclass
class Batch:
    """A batch of galaxies.

    Attributes
    ----------
    x : Tensor, float32 (B, L, H, W)
        Normalised maps.
    valid : Tensor, bool (B, L, H, W)
    weight : Tensor, float32 (B, L, H, W)
        Inverse variance in normalised linear units.
    rows : numpy.ndarray, int64 (B,)
        Their rows in the training set (`TrainingSet.plateifus` names them).
    """

    x: torch.Tensor
    valid: torch.Tensor
    weight: torch.Tensor
    rows: np.ndarray


class GalaxyMapsDataset(torch.utils.data.Dataset):
    """The galaxies of one split of a training set, read from the memory maps on demand.

    ``dataset[i]`` is ``(x, valid, weight, row)``, each map (L, H, W);
    ``dataset.__getitems__(indices)`` reads a whole batch with one fancy-indexed read of the memory
    maps (rows sorted, so the reads are sequential on disk) and is what `make_loader` uses.
    """

    def __init__(self, training_set: TrainingSet, split: str) -> None:
        self.training_set = training_set
        self.split = split
        self.rows = training_set.rows(split)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        row = int(self.rows[item])
        return (
            torch.from_numpy(np.array(self.training_set.flux[row])),
            torch.from_numpy(np.array(self.training_set.valid[row])),
            torch.from_numpy(np.array(self.training_set.weight[row])),
            row,
        )

    def __getitems__(self, items: list[int]) -> Batch:
        rows = np.sort(self.rows[np.asarray(items, dtype=np.int64)])
        return Batch(
            x=torch.from_numpy(np.ascontiguousarray(self.training_set.flux[rows])),
            valid=torch.from_numpy(np.ascontiguousarray(self.training_set.valid[rows])),
            weight=torch.from_numpy(np.ascontiguousarray(self.training_set.weight[rows])),
            rows=rows,
        )


def _keep_batch(batch: Batch) -> Batch:
    """Collation is already done by `GalaxyMapsDataset.__getitems__`."""
    return batch


def make_loader(
    dataset: GalaxyMapsDataset, batch_size: int, *, shuffle: bool, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A loader of `Batch` objects over a dataset (the last batch may be smaller).

    Parameters
    ----------
    dataset : GalaxyMapsDataset
    batch_size : int
    shuffle : bool
        Random order, drawn from a generator seeded with ``seed`` (so an epoch's order can be
        reproduced, e.g. after resuming).
    seed : int
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_keep_batch,
        drop_last=False,
    )


def nonfinite_galaxies(training_set: TrainingSet, split: str, chunk: int = 512) -> list[str]:
    """The galaxies of a split whose maps hold a NaN or an infinity (none in a training set
    `build_training_set` wrote; a damaged or hand-edited one may)."""
    rows = training_set.rows(split)
    bad: list[int] = []
    for start in range(0, len(rows), chunk):
        block = rows[start : start + chunk]
        finite = np.isfinite(training_set.flux[block].reshape(len(block), -1)).all(axis=1)
        bad.extend(block[~finite].tolist())
    return training_set.plateifus(bad)
