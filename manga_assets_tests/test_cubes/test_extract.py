import numpy as np
import pytest

from manga_assets.cubes.cube_file import read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets_tests.fits_builders import line_values, write_maps


def test_extraction_writes_the_cube_contract_and_features(tmp_path):
    values = line_values("3.1.0", (40, 40))
    values["NII-6585"] = 0.5 * values["Ha-6564"]
    values["OIII-5008"] = 3.0 * values["Hb-4862"]
    maps_path = write_maps(tmp_path / "maps.fits.gz", shape=(40, 40), values=values)
    cube_path = tmp_path / "cubes" / "8485" / "8485-1901.npz"

    row = extract_galaxy(maps_path, cube_path, ExtractionSettings(grid=32))

    with np.load(cube_path, allow_pickle=False) as data:
        assert sorted(data.files) == ["flux", "ivar", "lines", "mask"]
        assert data["flux"].dtype == np.float32 and data["flux"].shape == (19, 32, 32)
        assert data["ivar"].dtype == np.float32 and data["mask"].dtype == bool
        assert tuple(data["lines"]) == PROJECT_LINES
    cube = read_cube(cube_path)
    ha, nii = PROJECT_LINES.index("Ha-6564"), PROJECT_LINES.index("NII-6585")
    np.testing.assert_allclose(cube.flux[nii] / cube.flux[ha], 0.5, rtol=1e-5)
    assert row["log_nii_ha"] == pytest.approx(np.log10(0.5))
    assert row["log_oiii_hb"] == pytest.approx(np.log10(3.0))
    assert row["valid_fraction"] == 1.0 and row["n_valid_pixels"] == 19 * 32 * 32
    assert row["redshift"] == pytest.approx(0.0407)
    assert row["flux_int_Ha_6564"] == pytest.approx(float(values["Ha-6564"].sum()), rel=1e-5)


def test_a_failed_extraction_leaves_no_cube_behind(tmp_path):
    maps_path = write_maps(tmp_path / "maps.fits.gz", drop_extension="EMLINE_GFLUX_MASK")
    cube_path = tmp_path / "cube.npz"
    with pytest.raises(KeyError):
        extract_galaxy(maps_path, cube_path, ExtractionSettings())
    assert list(tmp_path.glob("*.npz")) == []


def test_cube_files_are_readable_by_others_like_any_product(tmp_path):
    maps_path = write_maps(tmp_path / "maps.fits.gz")
    cube_path = tmp_path / "cube.npz"
    extract_galaxy(maps_path, cube_path, ExtractionSettings())
    assert cube_path.stat().st_mode & 0o044 == 0o044, "mkstemp's 0600 must not leak into products"
