import numpy as np
import pandas as pd
import pytest

from manga_assets.analysis.latent import standardise
from manga_assets.analysis.neighbours import (
    UnknownPlateIFUError,
    latent_neighbours,
    neighbours_of,
    write_neighbour_table,
)
from manga_assets_tests.test_analysis.helpers import latents_table

K = 4


@pytest.fixture(scope="module")
def latents():
    return latents_table(40, dim=6, seed=2)


@pytest.fixture(scope="module")
def table(latents):
    return latent_neighbours(latents, k=K)


def test_table_shape_and_columns(latents, table):
    assert list(table.columns) == ["plateifu", "neighbour_rank", "neighbour_plateifu", "distance"]
    assert len(table) == len(latents) * K
    assert set(table["plateifu"]) == set(latents["plateifu"])
    ranks = table.groupby("plateifu")["neighbour_rank"].apply(list)
    assert all(r == list(range(1, K + 1)) for r in ranks)


def test_neighbours_exclude_self_and_are_sorted(table):
    assert (table["plateifu"] != table["neighbour_plateifu"]).all()
    assert (table.groupby("plateifu")["distance"].diff().dropna() >= 0).all()
    assert table["plateifu"].is_monotonic_increasing


def test_neighbours_match_brute_force_distances(latents, table):
    matrix = standardise(latents.filter(regex=r"^z\d+$").to_numpy())
    distances = np.linalg.norm(matrix[:, None] - matrix[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.sort(distances, axis=1)[:, :K]
    got = (
        table.set_index(["plateifu", "neighbour_rank"])["distance"]
        .unstack()
        .loc[latents["plateifu"]]
        .to_numpy()
    )
    assert np.allclose(got, expected, rtol=1e-5)


def test_identical_latents_are_never_their_own_neighbour():
    latents = latents_table(6, dim=3)
    latents.loc[1, ["z00", "z01", "z02"]] = latents.loc[0, ["z00", "z01", "z02"]].to_numpy()
    table = latent_neighbours(latents, k=2)
    first = table[table["neighbour_rank"] == 1].set_index("plateifu")
    a, b = latents.loc[0, "plateifu"], latents.loc[1, "plateifu"]
    assert first.loc[a, "neighbour_plateifu"] == b
    assert first.loc[b, "neighbour_plateifu"] == a
    assert first.loc[a, "distance"] == 0.0
    assert (table["plateifu"] != table["neighbour_plateifu"]).all()


def test_lookup_from_parquet_matches_table(tmp_path, table):
    path = write_neighbour_table(table, tmp_path / "neighbours.parquet")
    wanted = table["plateifu"].iloc[7]
    from_file = neighbours_of(path, wanted, k=3)
    from_frame = neighbours_of(table, wanted, k=3)
    assert list(from_file.columns) == ["neighbour_rank", "neighbour_plateifu", "distance"]
    assert list(from_file["neighbour_rank"]) == [1, 2, 3]
    pd.testing.assert_frame_equal(from_file, from_frame.reset_index(drop=True), check_dtype=False)
    assert not list(tmp_path.glob(".*tmp"))


def test_lookup_of_unknown_plateifu_says_so(tmp_path, table):
    path = write_neighbour_table(table, tmp_path / "neighbours.parquet")
    with pytest.raises(UnknownPlateIFUError, match="'9999-1901' is not in the neighbour table"):
        neighbours_of(path, "9999-1901")
    with pytest.raises(UnknownPlateIFUError, match="9999-1901"):
        neighbours_of(table, "9999-1901")


def test_lookup_of_malformed_plateifu_is_a_value_error(table):
    with pytest.raises(ValueError, match="not a MaNGA plate-IFU"):
        neighbours_of(table, "8485; rm -rf")


def test_k_is_clipped_to_sample_size():
    table = latent_neighbours(latents_table(3), k=10)
    assert len(table) == 3 * 2
