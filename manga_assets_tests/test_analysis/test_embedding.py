import numpy as np
import pytest

from manga_assets.analysis.embedding import umap_embedding, umap_table
from manga_assets_tests.test_analysis.helpers import latents_table


@pytest.fixture(scope="module")
def latents():
    return latents_table(30, dim=6, seed=4)


@pytest.fixture(scope="module")
def matrix(latents):
    return latents.filter(regex=r"^z\d+$").to_numpy()


def test_umap_shape_and_determinism(matrix):
    first = umap_embedding(matrix, n_neighbors=8, seed=7)
    second = umap_embedding(matrix, n_neighbors=8, seed=7)
    other_seed = umap_embedding(matrix, n_neighbors=8, seed=8)
    assert first.shape == (30, 2)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other_seed)


def test_fewer_galaxies_than_neighbours_is_clipped(matrix):
    embedding = umap_embedding(matrix[:6], n_neighbors=15, seed=0)
    assert embedding.shape == (6, 2)
    assert np.isfinite(embedding).all()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_samples_fall_back_to_pca(matrix, n):
    embedding = umap_embedding(matrix[:n], seed=0)
    assert embedding.shape == (n, 2)
    # PCA centres the points.
    assert np.allclose(embedding.mean(axis=0), 0.0, atol=1e-5)
    if n >= 2:
        assert np.ptp(embedding[:, 0]) > 0


def test_nan_is_refused(matrix):
    broken = matrix.copy()
    broken[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        umap_embedding(broken)


def test_umap_table_keeps_plateifus(latents):
    table = umap_table(latents, n_neighbors=8, seed=7)
    assert list(table.columns) == ["plateifu", "umap_x", "umap_y"]
    assert list(table["plateifu"]) == list(latents["plateifu"])
