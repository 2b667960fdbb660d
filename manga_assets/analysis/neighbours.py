"""Nearest neighbours of every galaxy in latent space, and fast look-ups of one galaxy's list.

The search is exact: scikit-learn's brute-force ``NearestNeighbors`` on the standardised latents
(Euclidean). Brute force is the right tool for MaNGA's ~10^4 galaxies in 32 dimensions: trees lose
their edge above ~20 dimensions, and scikit-learn computes the N x N distances in memory-bounded
chunks, so time grows as N^2 D but memory stays modest (about a second at 10^4 galaxies).

Past ~10^6 galaxies (a future survey, or one row per spaxel bin) exact all-pairs search costs
~10^12 distance evaluations and stops being a batch job. The usual path is then approximate search:
an HNSW graph (hnswlib, FAISS ``IndexHNSWFlat``) or an inverted-file index with product
quantisation (FAISS ``IndexIVFPQ``, GPU-capable) returns the k neighbours in ~log N per query at
recall > 0.95, with the index built once per model version. The queries shard naturally: split the
query set across workers (e.g. a Dagster partition per shard) against one shared index, or shard the
index by latent-space cluster and merge per-query top-k lists. Recall should then be measured on a
random sample against this exact search, which remains the reference.

The table is long: one row per (galaxy, neighbour), sorted by ``plateifu`` then ``neighbour_rank``.
A file written by :func:`write_neighbour_table` (the benchmarks') has row groups of
:data:`ROW_GROUP_SIZE` rows, so Parquet row-group statistics let :func:`neighbours_of` read only
the row groups holding one galaxy. The pipeline's ``{ae,vae}/neighbours.parquet`` is written by
the Parquet IO manager with pyarrow's default row groups (about a million rows: one group for the
whole survey at k = 10), so there the filter keeps the galaxy's rows but prunes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from manga_assets.analysis.latent import latent_matrix, standardise
from manga_assets.atomic import atomic_path
from manga_assets.sas.paths import PlateIFU

NEIGHBOUR_COLUMNS: tuple[str, ...] = (
    "plateifu",
    "neighbour_rank",
    "neighbour_plateifu",
    "distance",
)

# Small row groups keep a filtered look-up cheap: ~20k rows is ~2k galaxies with k = 10.
ROW_GROUP_SIZE = 20_000


class UnknownPlateIFUError(LookupError):
    """A plate-IFU that is not in the neighbour table."""


def nearest_others(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and row indices of the ``k`` nearest other rows of every row, nearest first.

    Exact brute-force Euclidean search; ``k`` must be below the number of rows.

    Returns
    -------
    distance : ndarray of float64, (N, k)
    index : ndarray of int, (N, k)
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(matrix)
    search = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(matrix)
    distance, index = search.kneighbors(matrix)
    # Remove each row itself by index: with duplicate rows it need not come first.
    not_self = index != np.arange(n)[:, None]
    not_self[not_self.all(axis=1), -1] = False
    return distance[not_self].reshape(n, k), index[not_self].reshape(n, k)


def latent_neighbours(
    latents: pd.DataFrame,
    k: int = 10,
    *,
    standardise_latents: bool = True,
    latent_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ``k`` nearest other galaxies of every galaxy in latent space (exact search).

    Parameters
    ----------
    latents : DataFrame
        A latents table with ``plateifu`` and latent columns ``z00``...
    k : int, optional
        Neighbours per galaxy, 10 by default; clipped to N - 1.
    standardise_latents : bool, optional
        Scale each latent dimension to unit variance first (default), as the anomaly k-NN score
        does, so that no single wide dimension sets the distances.
    latent_columns : sequence of str, optional
        Latent columns to use; by default every ``z<digits>`` column.

    Returns
    -------
    DataFrame
        :data:`NEIGHBOUR_COLUMNS`: ``plateifu``, ``neighbour_rank`` (1 = nearest),
        ``neighbour_plateifu``, ``distance`` (float32, in the searched space), sorted by
        ``plateifu`` then ``neighbour_rank``. A galaxy is never its own neighbour, even when
        another galaxy has identical latents.

    Raises
    ------
    ValueError
        If there are fewer than 2 galaxies, ``k`` < 1, or a latent is NaN (the galaxy is named).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    plateifus, matrix = latent_matrix(latents, latent_columns)
    n = len(plateifus)
    if n < 2:
        raise ValueError(f"neighbour search needs at least 2 galaxies, got {n}")
    if standardise_latents:
        matrix = standardise(matrix)
    k = min(k, n - 1)

    distance, index = nearest_others(matrix, k)
    table = pd.DataFrame(
        {
            "plateifu": np.repeat(plateifus, k),
            "neighbour_rank": np.tile(np.arange(1, k + 1, dtype=np.int16), n),
            "neighbour_plateifu": plateifus[index.ravel()],
            "distance": distance.ravel().astype(np.float32),
        }
    )
    return table.sort_values(["plateifu", "neighbour_rank"], kind="stable", ignore_index=True)


def write_neighbour_table(table: pd.DataFrame, path: Path) -> Path:
    """Write a neighbour table to Parquet, sorted for fast look-ups, atomically.

    The file is written under a temporary name in the same folder and renamed into place, so a
    reader never sees half a table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = table.loc[:, list(NEIGHBOUR_COLUMNS)].sort_values(
        ["plateifu", "neighbour_rank"], kind="stable", ignore_index=True
    )
    arrow = pa.Table.from_pandas(ordered, preserve_index=False)
    with atomic_path(path, durable=True) as temporary:  # existing means done: fsync first
        pq.write_table(arrow, temporary, row_group_size=ROW_GROUP_SIZE)
    return path


def neighbours_of(
    table: Path | str | pd.DataFrame, plateifu: str, k: int | None = None
) -> pd.DataFrame:
    """The nearest neighbours of one galaxy, nearest first.

    Parameters
    ----------
    table : Path, str or DataFrame
        A neighbour table or the Parquet file holding one. From a file only the rows of
        ``plateifu`` are kept (a pyarrow filter; it skips whole row groups only in files with
        several, such as :func:`write_neighbour_table` writes).
    plateifu : str
        The galaxy, e.g. '8485-1901'.
    k : int, optional
        Return at most this many neighbours; all stored ones by default.

    Returns
    -------
    DataFrame
        ``neighbour_rank``, ``neighbour_plateifu``, ``distance``.

    Raises
    ------
    ValueError
        If ``plateifu`` is not a plate-IFU designation.
    UnknownPlateIFUError
        If the table has no row for ``plateifu``.
    """
    wanted = str(PlateIFU.parse(plateifu))
    columns = ["neighbour_rank", "neighbour_plateifu", "distance"]
    if isinstance(table, pd.DataFrame):
        rows = table.loc[table["plateifu"].astype(str) == wanted, columns]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(
            table, columns=["plateifu", *columns], filters=[("plateifu", "==", wanted)]
        ).to_pandas()[columns]
    if rows.empty:
        raise UnknownPlateIFUError(
            f"plate-IFU {wanted!r} is not in the neighbour table; it has no latents (not in the "
            "catalogue, its MAPS file failed, or the table predates it)"
        )
    rows = rows.sort_values("neighbour_rank", kind="stable", ignore_index=True)
    return rows if k is None else rows.head(k)
