"""Small synthetic releases shared by the tests of this folder (written once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from manga_assets.synthetic import ReleaseSummary, SyntheticReleaseSpec, build_release

# Small bundles keep full-format files small; both sizes still have real MAPS dimensions.
SMALL_IFUS = ((19, 2), (37, 3))

FULL_DR17 = SyntheticReleaseSpec(
    release="DR17", n_plates=2, galaxies_per_plate=4, faults=True, ifu_mix=SMALL_IFUS, seed=3
)
FULL_DR15 = SyntheticReleaseSpec(
    release="DR15", n_plates=2, galaxies_per_plate=4, faults=True, ifu_mix=SMALL_IFUS, seed=3
)
# Enough galaxies of every BPT class for the physics tests.
LEAN_DR17 = SyntheticReleaseSpec(release="DR17", n_plates=6, galaxies_per_plate=9, lean=True)


@pytest.fixture(scope="session")
def full_dr17(tmp_path_factory: pytest.TempPathFactory) -> ReleaseSummary:
    return build_release(tmp_path_factory.mktemp("full_dr17"), FULL_DR17)


@pytest.fixture(scope="session")
def full_dr15(tmp_path_factory: pytest.TempPathFactory) -> ReleaseSummary:
    return build_release(tmp_path_factory.mktemp("full_dr15"), FULL_DR15)


@pytest.fixture(scope="session")
def lean_dr17(tmp_path_factory: pytest.TempPathFactory) -> ReleaseSummary:
    return build_release(tmp_path_factory.mktemp("lean_dr17"), LEAN_DR17)


def read_truth(summary: ReleaseSummary) -> pd.DataFrame:
    """The truth table of ``summary``, indexed by plate-IFU."""
    return pd.read_parquet(summary.truth_path).set_index("plateifu")


def healthy_plateifus(summary: ReleaseSummary) -> list[str]:
    """Galaxies with a complete, readable MAPS file."""
    truth = read_truth(summary)
    return [p for p in summary.plateifus if truth.loc[p, "has_maps"]]


def channel_index(header: fits.Header) -> dict[str, int]:
    """Channel name -> 0-based index from C01..Cnn (or C1..C9) keywords, as mangadap does."""
    channels = {}
    for key, value in header.items():
        if key.startswith("C") and key[1:].isdigit():
            channels[value] = int(key[1:]) - 1
    return channels


def read_lines(path: Path) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
    """(channels, flux, ivar, mask) of a MAPS file's EMLINE_GFLUX extensions."""
    with fits.open(path) as hdus:
        channels = channel_index(hdus["EMLINE_GFLUX"].header)
        flux = hdus["EMLINE_GFLUX"].data.astype(np.float32)
        ivar = hdus["EMLINE_GFLUX_IVAR"].data.astype(np.float32)
        mask = hdus["EMLINE_GFLUX_MASK"].data.astype(np.int64)
    return channels, flux, ivar, mask
