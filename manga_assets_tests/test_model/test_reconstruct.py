"""`reconstruct` keeps, per pixel, exactly what `embed` reduces to one number per line."""

import numpy as np
import pytest
import torch

from manga_assets.model.autoencoder import ConvLSTMAutoencoder
from manga_assets.model.checkpoint import save_model
from manga_assets.model.inference import embed
from manga_assets.model.reconstruct import load_published_model, reconstruct
from manga_assets_tests.test_model.conftest import GRID, tiny_config
from manga_assets_tests.test_model.cubes import make_cube


@pytest.fixture(params=["ae", "vae"])
def model_and_cubes(request, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(request.param)
    model = ConvLSTMAutoencoder(config)
    # A published model, as the explorer finds it (models/<variant>/ with model.pt).
    save_model(tmp_path / "model", model, config, {"model_id": "test"})
    rng = np.random.default_rng(3)
    cubes = [make_cube(rng, grid=GRID, line_class=name) for name in ("sf", "seyfert", "liner")]
    return tmp_path / "model", cubes


def test_residual_and_smoothed_peaks_agree_with_the_latents_statistics(model_and_cubes):
    model_dir, cubes = model_and_cubes
    model, config = load_published_model(model_dir)
    flux, ivar, mask = (np.stack(arrays) for arrays in zip(*cubes, strict=True))
    embedded = embed(model, config, flux, ivar, mask)
    for index, (f, i, m) in enumerate(cubes):
        result = reconstruct(model, config, f, i, m)
        assert result.model_flux.shape == f.shape
        # The residual squared and summed per line is the chi-square the anomaly scores read.
        chi2 = np.nansum(result.residual**2, axis=(1, 2))
        np.testing.assert_allclose(chi2, embedded.chi2_per_line[index], rtol=1e-4, atol=1e-4)
        # The smoothed map's peak is the latents' coherent peak.
        np.testing.assert_allclose(
            result.coherent_peak, embedded.coherent_peak_per_line[index], rtol=1e-4, atol=1e-4
        )
        assert np.isnan(result.residual[~result.valid]).all()
        assert np.isfinite(result.residual[result.valid]).all()


def test_the_reconstruction_is_in_the_cubes_flux_units(model_and_cubes):
    model_dir, cubes = model_and_cubes
    model, config = load_published_model(model_dir)
    flux, ivar, mask = cubes[0]
    result = reconstruct(model, config, flux, ivar, mask)
    # Where the model is right, (data - model) * sqrt(ivar) is the residual in noise units
    # before the model's floor; the floor only shrinks it.
    raw = (flux - result.model_flux) * np.sqrt(ivar)
    valid = result.valid
    assert np.all(np.abs(result.residual[valid]) <= np.abs(raw[valid]) * (1 + 1e-3) + 1e-3)


def test_a_cube_on_another_grid_is_refused_with_its_shape(model_and_cubes):
    model_dir, _ = model_and_cubes
    model, config = load_published_model(model_dir)
    flux, ivar, mask = make_cube(np.random.default_rng(0), grid=GRID * 2)
    with pytest.raises(ValueError, match="shape"):
        reconstruct(model, config, flux, ivar, mask)
