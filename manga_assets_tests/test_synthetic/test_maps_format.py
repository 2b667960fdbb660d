"""MAPS files sit where the SAS keeps them and follow the DAP data model of their release."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits

from manga_assets.dap.datamodel import (
    EMLINE_CHANNELS,
    FLUX_BUNIT,
    IVAR_BUNIT,
    MAPS_EXTENSIONS,
    SPEED_OF_LIGHT_KMS,
    channel_keyword,
)
from manga_assets.sas.releases import get_release
from manga_assets.synthetic import SyntheticReleaseSpec, build_release
from manga_assets.synthetic.spec import MAP_SIZE_PIXELS
from manga_assets_tests.test_synthetic.conftest import (
    SMALL_IFUS,
    channel_index,
    healthy_plateifus,
    read_lines,
    read_truth,
)

DAPVER = {"DR17": "3.1.0", "DR15": "2.2.1"}


@pytest.fixture(params=["DR17", "DR15"])
def full_release(request, full_dr17, full_dr15):
    return {"DR17": full_dr17, "DR15": full_dr15}[request.param]


def test_files_are_at_their_sas_locations(full_release):
    release = get_release(full_release.release)
    root = full_release.root
    # The SAS layout of the reference (section 1.1), spelt out independently of sas.paths.
    redux = f"{release.sas_dir}/manga/spectro/redux/{release.drpver}"
    analysis = f"{release.sas_dir}/manga/spectro/analysis/{release.drpver}/{release.dapver}"
    assert full_release.drpall_path == root / redux / f"drpall-{release.drpver}.fits"
    assert full_release.dapall_path == (
        root / analysis / f"dapall-{release.drpver}-{release.dapver}.fits"
    )
    assert full_release.drpall_path.is_file() and full_release.dapall_path.is_file()
    assert full_release.truth_path == root / "truth.parquet"
    for plateifu, path in full_release.maps_paths.items():
        plate, ifu = plateifu.split("-")
        name = f"manga-{plateifu}-MAPS-{release.daptype}.fits.gz"
        assert path == root / analysis / release.daptype / plate / ifu / name
    truth = read_truth(full_release)
    missing = {p for p, kind in full_release.faults if kind == "missing_file"}
    for plateifu, path in full_release.maps_paths.items():
        assert path.exists() == (plateifu not in missing), plateifu
    assert not any(path.name.endswith(".tmp") for path in root.rglob("*"))
    assert len(full_release.maps_paths) == int(truth["dap_done"].sum())


def test_hdus_are_the_dap_extensions_in_order(full_release):
    dapver = DAPVER[full_release.release]
    expected = ["PRIMARY", *MAPS_EXTENSIONS[dapver]]
    for plateifu in healthy_plateifus(full_release):
        with fits.open(full_release.maps_paths[plateifu]) as hdus:
            hdus.verify("exception")
            assert [hdu.name for hdu in hdus] == expected
    assert len(expected) == {"3.1.0": 64, "2.2.1": 48}[dapver]


def test_extension_headers_follow_the_hduclass_convention(full_release):
    dapver = DAPVER[full_release.release]
    names = set(MAPS_EXTENSIONS[dapver])
    with fits.open(full_release.maps_paths[healthy_plateifus(full_release)[0]]) as hdus:
        for hdu in hdus[1:]:
            header = hdu.header
            assert header["HDUCLASS"] == "SDSS"
            multi = hdu.data.ndim == 3
            assert header["HDUCLAS1"] == ("CUBE" if multi else "IMAGE"), hdu.name
            if hdu.name.endswith("_MASK"):
                assert header["HDUCLAS2"] == "QUALITY"
                assert header["SCIDATA"] == hdu.name[: -len("_MASK")]
                assert hdu.data.dtype.kind == "i" and hdu.data.dtype.itemsize == 4
            elif hdu.name.endswith("_IVAR"):
                assert header["HDUCLAS2"] == "ERROR"
                assert header["SCIDATA"] == hdu.name[: -len("_IVAR")]
            else:
                assert header["HDUCLAS2"] == "DATA"
                if f"{hdu.name}_IVAR" in names:
                    assert header["ERRDATA"] == f"{hdu.name}_IVAR"
                if f"{hdu.name}_MASK" in names:
                    assert header["QUALDATA"] == f"{hdu.name}_MASK"
            if multi:
                n = hdu.data.shape[0]
                names_ = [header[channel_keyword(i, n)] for i in range(n)]
                assert all(isinstance(v, str) and v for v in names_), hdu.name
                assert len(set(names_)) == n, hdu.name
                assert channel_keyword(n, n) not in header, hdu.name


def test_emission_line_channels_units_and_shapes(full_release):
    dapver = DAPVER[full_release.release]
    lines = EMLINE_CHANNELS[dapver]
    truth = read_truth(full_release)
    for plateifu in healthy_plateifus(full_release):
        size = MAP_SIZE_PIXELS[int(truth.loc[plateifu, "ifu_size"])]
        with fits.open(full_release.maps_paths[plateifu]) as hdus:
            for name in ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK", "EMLINE_GVEL"):
                header = hdus[name].header
                assert [header[f"C{i + 1:02d}"] for i in range(len(lines))] == list(lines)
                assert hdus[name].data.shape == (len(lines), size, size)
            assert hdus["EMLINE_GFLUX"].header["BUNIT"] == FLUX_BUNIT
            assert hdus["EMLINE_GFLUX_IVAR"].header["BUNIT"] == IVAR_BUNIT
            assert hdus["EMLINE_SFLUX"].header["C01"] == "OIId-3728"
            assert hdus["EMLINE_GVEL"].header["BUNIT"] == "km/s"
            assert hdus["EMLINE_GFLUX"].data.dtype.kind == "f"
            assert hdus["EMLINE_GFLUX"].data.dtype.itemsize == 4
            # Fewer than ten channels: unpadded keywords.
            assert hdus["BINID"].header["C1"] == "Binned spectra"
            assert hdus["SPX_SKYCOO"].header["C2"] == "On-sky Y"


def test_primary_header_describes_the_cube(full_release):
    release = get_release(full_release.release)
    truth = read_truth(full_release)
    for plateifu in healthy_plateifus(full_release):
        header = fits.getheader(full_release.maps_paths[plateifu], 0)
        assert header["PLATEIFU"] == plateifu
        assert header["MANGAID"] == truth.loc[plateifu, "mangaid"]
        assert header["DAPTYPE"] == release.daptype
        assert header["DAPFRMT"] == "MAPS"
        assert header["MASKNAME"] == "MANGA_DAPPIXMASK"
        assert header["VERSDAP"] == release.dapver
        assert header["VERSDRP3"] == release.drpver
        assert header["SCINPVEL"] / SPEED_OF_LIGHT_KMS == pytest.approx(
            truth.loc[plateifu, "z"], rel=1e-6
        )
        for key in ("OBJRA", "OBJDEC", "IFURA", "IFUDEC", "DAPQUAL", "DRP3QUAL", "EBVGAL"):
            assert key in header
        assert "synthetic" in header["AUTHOR"]


def test_other_extensions_hold_varied_physical_data(full_dr17):
    with fits.open(full_dr17.maps_paths[healthy_plateifus(full_dr17)[0]]) as hdus:
        covered = (hdus["EMLINE_GFLUX_MASK"].data[0] & 1) == 0
        for hdu in hdus[1:]:
            if hdu.name.endswith("_MASK") or hdu.name == "BINID":
                continue
            planes = hdu.data if hdu.data.ndim == 3 else hdu.data[None]
            for index, plane in enumerate(planes):
                if not np.any(plane[covered]):
                    # Moment channels whose passband another line covers are empty, as in the DAP.
                    assert hdu.name.startswith("EMLINE_S"), (hdu.name, index)
                    continue
                assert np.all(np.isfinite(plane)), hdu.name
                assert np.std(plane[covered]) > 0, (hdu.name, index)
        velocity = hdus["STELLAR_VEL"].data[covered]
        assert velocity.min() < -10 < 10 < velocity.max()  # a rotating disk
        bins = hdus["BINID"].data
        assert bins[0][~covered].max() == -1 and bins[0][covered].min() == 0


def test_full_files_are_realistically_large(tmp_path):
    spec = SyntheticReleaseSpec(n_plates=1, galaxies_per_plate=1, ifu_mix=((127, 1),), seed=5)
    summary = build_release(tmp_path, spec)
    (path,) = summary.maps_paths.values()
    raw = gzip.decompress(path.read_bytes())
    assert len(raw) > 25e6  # tens of MB uncompressed, like a real 127-fibre DR17 file
    assert path.stat().st_size < len(raw) / 1.5
    with fits.open(io.BytesIO(raw)) as hdus:
        names = [hdu.name for hdu in hdus]
        offsets = {hdu.name: hdu.fileinfo()["datLoc"] for hdu in hdus}
    # The flux extensions are HDUs 30-32 of 64; by bytes they come earlier, because the 46-channel
    # spectral-index extensions fill the second half (as in real DR17 files).
    assert names.index("EMLINE_GFLUX") == 30
    assert 0.1 < offsets["EMLINE_GFLUX"] / len(raw) < 0.3


def test_lean_files_hold_the_same_line_maps_as_full_ones(tmp_path):
    full = build_release(tmp_path / "full", SyntheticReleaseSpec(
        n_plates=1, galaxies_per_plate=3, ifu_mix=SMALL_IFUS, seed=7
    ))  # fmt: skip
    lean = build_release(tmp_path / "lean", SyntheticReleaseSpec(
        n_plates=1, galaxies_per_plate=3, ifu_mix=SMALL_IFUS, seed=7, lean=True
    ))  # fmt: skip
    assert lean.plateifus == full.plateifus
    for plateifu in healthy_plateifus(lean):
        with fits.open(lean.maps_paths[plateifu]) as hdus:
            assert [hdu.name for hdu in hdus] == [
                "PRIMARY",
                "EMLINE_GFLUX",
                "EMLINE_GFLUX_IVAR",
                "EMLINE_GFLUX_MASK",
            ]
            assert channel_index(hdus["EMLINE_GFLUX"].header)["Ha-6564"] == 23
        for lean_array, full_array in zip(
            read_lines(lean.maps_paths[plateifu]),
            read_lines(full.maps_paths[plateifu]),
            strict=True,
        ):
            if isinstance(lean_array, dict):
                assert lean_array == full_array
            else:
                np.testing.assert_array_equal(lean_array, full_array)
        assert lean.maps_paths[plateifu].stat().st_size < full.maps_paths[plateifu].stat().st_size
