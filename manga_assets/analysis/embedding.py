"""Two-dimensional maps of the latent space (UMAP), for plotting.

umap-learn (and through it numba) is imported inside :func:`umap_embedding` only: importing it costs
seconds and compiles code, which nothing else in the package should pay for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from manga_assets.analysis.latent import latent_matrix, require_finite

# Below this many galaxies UMAP's neighbour graph and spectral layout are not meaningful.
MIN_UMAP_GALAXIES = 4


def pca_embedding(latents: np.ndarray) -> np.ndarray:
    """Projection of ``latents`` on its first two principal axes, zero-padded to (N, 2).

    The fallback for samples too small for UMAP; deterministic (signs fixed so that the largest
    loading of each axis is positive).
    """
    centred = latents - latents.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    signs[signs == 0] = 1.0
    projected = centred @ (axes * signs[:, None])[:2].T
    out = np.zeros((len(latents), 2), dtype=np.float32)
    out[:, : projected.shape[1]] = projected
    return out


def umap_embedding(
    latents: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """UMAP of the latent vectors into two dimensions.

    Parameters
    ----------
    latents : ndarray, (N, D)
        One latent vector per galaxy.
    n_neighbors : int, optional
        Size of the local neighbourhood UMAP preserves, 15 by default; clipped to N - 1 (and to
        at least 2) so small samples work.
    min_dist : float, optional
        How tightly UMAP packs points, 0.1 by default.
    seed : int, optional
        Random state, 0 by default. With a seed UMAP runs single-threaded and is reproducible:
        the same input and seed give the same embedding.

    Returns
    -------
    ndarray of float32, (N, 2)

    Raises
    ------
    ValueError
        If ``latents`` is not 2-D, is empty, or holds NaN or infinity.

    Notes
    -----
    For N < 4 galaxies there is no neighbourhood to preserve; the embedding is then the PCA
    projection (:func:`pca_embedding`) instead, so a tiny test or demo run still gets a map.
    """
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) == 0:
        raise ValueError(f"latents must be a non-empty (N, D) array, got shape {latents.shape}")
    require_finite(latents, [f"row {i}" for i in range(len(latents))], "latents")
    n = len(latents)
    if n < MIN_UMAP_GALAXIES:
        return pca_embedding(latents)

    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n - 1)),
        min_dist=min_dist,
        random_state=seed,
        # A seed forces one thread anyway; saying so silences umap's warning about it.
        n_jobs=1,
    )
    embedding = reducer.fit_transform(latents)
    return np.asarray(embedding, dtype=np.float32)


def umap_table(
    latents: pd.DataFrame,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    latent_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """:func:`umap_embedding` of a latents table as ``plateifu``, ``umap_x``, ``umap_y``.

    Raises
    ------
    ValueError
        If a latent value is NaN or infinite (the message names the galaxies).
    """
    plateifus, matrix = latent_matrix(latents, latent_columns)
    embedding = umap_embedding(matrix, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    return pd.DataFrame(
        {"plateifu": plateifus, "umap_x": embedding[:, 0], "umap_y": embedding[:, 1]}
    )
