"""Planted broken files are broken in exactly the recorded way."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from manga_assets.dap.datamodel import DAPPIXMASK_BITS, MAPS_EXTENSIONS
from manga_assets.synthetic import SyntheticReleaseSpec, build_release
from manga_assets.synthetic.spec import FAULT_KINDS
from manga_assets_tests.test_synthetic.conftest import SMALL_IFUS, read_truth

DONOTUSE = 1 << DAPPIXMASK_BITS["DONOTUSE"]


def _fault(summary, kind: str):
    (plateifu,) = [p for p, k in summary.faults if k == kind]
    return plateifu, summary.maps_paths[plateifu]


def test_every_fault_kind_is_planted_once(full_dr17):
    assert sorted(kind for _, kind in full_dr17.faults) == sorted(FAULT_KINDS)
    truth = read_truth(full_dr17)
    assert not truth.loc[[p for p, _ in full_dr17.faults], "has_maps"].any()
    assert truth.loc[truth["fault"] == "none", "has_maps"].sum() == truth["dap_done"].sum() - 4


def test_truncated_gzip_cannot_be_read(full_dr17):
    _, path = _fault(full_dr17, "truncated_gzip")
    with pytest.raises(EOFError):
        gzip.decompress(path.read_bytes())
    # The break lies inside EMLINE_GFLUX: a reader cannot get all three flux extensions.
    try:
        with fits.open(path) as hdus:
            names = [hdu.name for hdu in hdus]
            flux = hdus["EMLINE_GFLUX"].data if "EMLINE_GFLUX" in names else None
    except (OSError, EOFError, TypeError, ValueError):
        return
    assert "EMLINE_GFLUX_MASK" not in names
    assert flux is None or not np.isfinite(flux).all() or flux.size < 35 * 34 * 34


def test_missing_file_is_listed_but_absent(full_dr17):
    plateifu, path = _fault(full_dr17, "missing_file")
    assert not path.exists()
    with fits.open(full_dr17.dapall_path) as hdus:
        table = hdus["HYB10-MILESHC-MASTARSSP"].data
    assert table["DAPDONE"][list(table["PLATEIFU"]).index(plateifu)]


def test_file_without_the_flux_extension(full_dr17):
    _, path = _fault(full_dr17, "no_gflux_hdu")
    with fits.open(path) as hdus:
        names = [hdu.name for hdu in hdus]
    assert "EMLINE_GFLUX" not in names
    assert "EMLINE_GFLUX_IVAR" in names and "EMLINE_GFLUX_MASK" in names
    assert len(names) == len(MAPS_EXTENSIONS["3.1.0"])  # PRIMARY plus all but one


def test_file_with_every_pixel_donotuse(full_dr17):
    _, path = _fault(full_dr17, "all_donotuse")
    with fits.open(path) as hdus:
        mask = hdus["EMLINE_GFLUX_MASK"].data
        flux = hdus["EMLINE_GFLUX"].data
    assert ((mask & DONOTUSE) > 0).all()
    assert np.any(flux != 0)  # the values are there; only the mask condemns them


def test_no_faults_unless_asked(tmp_path):
    spec = SyntheticReleaseSpec(n_plates=1, galaxies_per_plate=4, ifu_mix=SMALL_IFUS, lean=True)
    summary = build_release(tmp_path, spec)
    assert summary.faults == []
    truth = read_truth(summary)
    assert (truth["fault"] == "none").all()
    for plateifu, path in summary.maps_paths.items():
        with fits.open(path) as hdus:
            assert ((hdus["EMLINE_GFLUX_MASK"].data & DONOTUSE) == 0).any(), plateifu
