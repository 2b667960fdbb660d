from __future__ import annotations

import numpy as np
import pytest
import torch

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.autoencoder import ConvLSTMAutoencoder
from manga_assets.model.dataset import CubeFormatError, read_cube
from manga_assets.model.inference import (
    InferenceError,
    coherent_peaks,
    embed,
    embed_cubes,
    extended_residuals,
    latents_table,
    latents_table_columns,
    per_line_columns,
)
from manga_assets.model.normalise import denormalise, galaxy_scale, normalise, valid_pixels
from manga_assets_tests.test_model.conftest import DEVICE, GRID, tiny_config
from manga_assets_tests.test_model.cubes import make_cube, write_cube, write_cubes


@pytest.fixture
def cubes():
    rng = np.random.default_rng(0)
    flux, ivar, mask = (
        np.stack(arrays) for arrays in zip(*(make_cube(rng, GRID) for _ in range(5)), strict=True)
    )
    mask[2, 7] = True  # one line entirely invalid in one galaxy
    return flux, ivar, mask


@pytest.fixture
def model_and_config():
    torch.manual_seed(0)
    config = tiny_config("vae", latent_dim=6)
    return ConvLSTMAutoencoder(config), config


def test_embed_matches_the_model_on_normalised_cubes(cubes, model_and_config):
    flux, ivar, mask = cubes
    model, config = model_and_config
    result = embed(model, config, flux, ivar, mask, batch_size=2, lines=PROJECT_LINES)
    assert result.latents.shape == (5, 6) and result.latents.dtype == np.float32
    assert result.recon_error.shape == (5,) and result.chi2_per_line.shape == (5, 19)

    valid = valid_pixels(flux, mask, ivar)
    scales = [
        galaxy_scale(flux[i], valid[i], PROJECT_LINES, config.normalisation) for i in range(5)
    ]
    np.testing.assert_allclose(result.scale, scales)
    x = torch.from_numpy(normalise(flux, valid, np.array(scales), config.normalisation))
    valid_t = torch.from_numpy(valid)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(result.latents, model.encode(x, valid_t).numpy(), atol=1e-5)
        reconstruction = model.decode(model.encode(x, valid_t))
    # The chi-square in the galaxy's linear units: x = f / s, w = ivar s^2, and the model's
    # uncertainty per line (5 % plus its learned floor).
    eps = model.line_floor().detach().numpy().astype(np.float64)
    model_flux = denormalise(reconstruction.numpy().astype(np.float64), 1.0, config.normalisation)
    linear = np.where(valid, flux / np.array(scales)[:, None, None, None], 0.0)
    weight = np.where(valid, ivar * np.array(scales)[:, None, None, None] ** 2, 0.0)
    effective = weight / (1 + weight * (eps * model_flux) ** 2)
    terms = np.where(valid, effective * (model_flux - linear) ** 2, 0.0)
    expected = terms.sum(axis=(1, 2, 3)) / valid.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(result.recon_error, expected, rtol=1e-3)
    assert result.chi2_per_line[0, 3] == pytest.approx(terms[0, 3].sum(), rel=1e-3)
    assert result.chi2_per_line[2, 7] == 0 and result.n_valid_per_line[2, 7] == 0
    assert result.coherent_peak_per_line[2, 7] == 0
    assert (result.coherent_peak_per_line[2, :7] > 0).all()
    # The residual summed over the footprint, its spread with the model's floor counted once.
    signed = np.sign(linear - model_flux) * np.sqrt(terms)
    model_snr = np.where(valid, np.abs(model_flux) * np.sqrt(effective), 0.0)
    n_valid = valid.sum(axis=(2, 3))
    extended = signed.sum(axis=(2, 3)) / np.sqrt(
        np.maximum(n_valid + (eps[:, 0, 0] * model_snr.sum(axis=(2, 3))) ** 2, 1.0)
    )
    np.testing.assert_allclose(
        np.delete(result.extended_residual_per_line, 7, axis=1),
        np.delete(extended, 7, axis=1),
        rtol=1e-3,
        atol=1e-3,
    )
    assert result.extended_residual_per_line[2, 7] == 0
    np.testing.assert_array_equal(result.n_valid_pixels, valid.sum(axis=(1, 2, 3)))
    np.testing.assert_array_equal(result.n_valid_per_line, valid.sum(axis=(2, 3)))


def test_coherent_peaks_find_structure_not_white_noise():
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 1, 32, 32, generator=generator)
    valid = torch.ones_like(noise, dtype=torch.bool)
    unseen = torch.zeros_like(noise)  # structure the model leaves out: x_hat = 0
    white = coherent_peaks(noise, unseen, valid, systematic_floor=0.05)
    # Smoothed unit white noise has unit variance: its peak over ~1000 pixels is a few sigma.
    assert 2.0 < float(white.median()) < 4.5
    ring = noise.clone()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radius = ((yy - 16) ** 2 + (xx - 16) ** 2).sqrt()
    ring += 1.5 * ((radius > 8) & (radius < 11)).float()  # 1.5 sigma per pixel, coherent
    assert float(coherent_peaks(ring, unseen, valid, 0.05).median()) > 2 * float(white.median())


def test_coherent_peaks_count_the_models_floor_once_over_the_kernel():
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(200, 1, 32, 32, generator=generator)
    valid = torch.ones_like(noise, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    nucleus = ((yy - 16) ** 2 + (xx - 16) ** 2 < 9).float()
    # A nucleus the model puts at S/N 20 per pixel (the most the 5 % floor allows), missed by
    # 10 % of its flux (2 sigma per pixel): an ordinary misfit, at the level of the noise alone.
    bright = 20.0 * nucleus
    misfit = noise + 0.1 * bright
    white = coherent_peaks(noise, bright, valid, 0.05)
    assert float(coherent_peaks(misfit, bright, valid, 0.05).median()) < 1.5 * float(
        white.median()
    )
    # Without the floor the same misfit would be a strong detection.
    assert float(coherent_peaks(misfit, bright, valid, 0.0).median()) > 2 * float(white.median())
    # A second nucleus of the same brightness that the model leaves out stands out.
    second = noise + 20.0 * ((yy - 16) ** 2 + (xx - 24) ** 2 < 9).float()
    assert float(coherent_peaks(second, bright, valid, 0.05).median()) > 5 * float(
        white.median()
    )


def test_extended_residuals_add_up_a_faint_line_but_not_a_bright_lines_small_misfit():
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(200, 1, 32, 32, generator=generator)
    valid = torch.ones_like(noise, dtype=torch.bool)
    unseen = torch.zeros_like(noise)  # a line the model leaves out: x_hat = 0
    white = extended_residuals(noise, unseen, valid, systematic_floor=0.05)
    # White noise: a unit normal value per galaxy and line.
    assert abs(float(white.mean())) < 0.25 and 0.8 < float(white.std()) < 1.2
    faint = noise + 0.3  # 0.3 sigma per pixel over the whole footprint
    assert float(extended_residuals(faint, unseen, valid, 0.05).median()) > 8
    # Per pixel the same line is lost in the noise, at the PSF's scale too.
    assert float(coherent_peaks(faint, unseen, valid, 0.05).median()) < 2 * float(
        coherent_peaks(noise, unseen, valid, 0.05).median()
    )
    # A bright line (model S/N 100 per pixel) missed by 3 %: within the model's 5 % floor.
    bright = torch.full_like(noise, 100.0)
    assert float(extended_residuals(noise + 3.0, bright, valid, 0.05).abs().max()) < 1.0


def test_batch_size_does_not_change_the_result(cubes, model_and_config):
    model, config = model_and_config
    one = embed(model, config, *cubes, batch_size=1, device=DEVICE)
    all_at_once = embed(model, config, *cubes, batch_size=64, device=DEVICE)
    np.testing.assert_allclose(one.latents, all_at_once.latents, atol=1e-5)
    np.testing.assert_allclose(one.recon_error, all_at_once.recon_error, rtol=1e-4)


def test_nan_latents_name_the_galaxy(cubes, model_and_config):
    model, config = model_and_config
    flux, ivar, mask = cubes
    flux = flux.copy()
    with torch.no_grad():
        model.to_latent.weight[0, 0] = float("nan")
    names = ["8001-1901", "8001-1902", "8001-1903", "8001-1904", "8001-1905"]
    with pytest.raises(
        InferenceError, match=r"non-finite latent vectors for galaxies \['8001-1901'"
    ):
        embed(model, config, flux, ivar, mask, plateifus=names)


def test_cubes_with_other_lines_or_grid_are_refused(cubes, model_and_config):
    model, config = model_and_config
    flux, ivar, mask = cubes
    with pytest.raises(ValueError, match="the cubes hold the lines .* but the model was trained"):
        embed(model, config, flux, ivar, mask, lines=PROJECT_LINES[::-1])
    with pytest.raises(ValueError, match=r"shape \(N, 19, 16, 16\).*got \(5, 19, 8, 8\)"):
        embed(model, config, flux[..., :8, :8], ivar[..., :8, :8], mask[..., :8, :8])
    with pytest.raises(ValueError, match=r"got \(5, 18, 16, 16\)"):
        embed(model, config, flux[:, 1:], ivar[:, 1:], mask[:, 1:])


def test_ivar_none_uses_the_mask_only(cubes, model_and_config):
    model, config = model_and_config
    flux, ivar, mask = cubes
    ivar = ivar.copy()
    ivar[0, 0, 5, 5] = 0.0
    with_ivar = embed(model, config, flux, ivar, mask)
    without = embed(model, config, flux, None, mask)
    assert without.n_valid_pixels[0] == with_ivar.n_valid_pixels[0] + (not mask[0, 0, 5, 5])


def test_embed_cubes_reads_files_and_names_rows(tmp_path, model_and_config):
    model, config = model_and_config
    cubes = write_cubes(tmp_path, 4, grid=GRID, seed=12)
    result = embed_cubes(model, config, cubes, batch_size=3)
    assert result.plateifus == [plateifu for plateifu, _ in cubes]
    frame = result.to_frame()
    assert list(frame.columns[:3]) == ["plateifu", "z00", "z01"] and len(frame) == 4
    np.testing.assert_array_equal(frame[[f"z{i:02d}" for i in range(6)]].to_numpy(), result.latents)
    direct = embed(model, config, *(np.stack(a) for a in zip(*(
        read_cube(path, name, grid=GRID) for name, path in cubes), strict=True)))  # fmt: skip
    np.testing.assert_allclose(result.latents, direct.latents, atol=1e-6)
    assert embed_cubes(model, config, []).latents.shape == (0, 6)
    per_line = result.per_line_frame(config.line_names)
    assert list(per_line.columns) == per_line_columns(config.line_names)
    line = config.line_names[3]
    np.testing.assert_array_equal(per_line[f"chi2_{line}"], result.chi2_per_line[:, 3])
    np.testing.assert_array_equal(per_line[f"n_{line}"], result.n_valid_per_line[:, 3])
    np.testing.assert_array_equal(per_line[f"peak_{line}"], result.coherent_peak_per_line[:, 3])
    np.testing.assert_array_equal(
        per_line[f"extended_{line}"], result.extended_residual_per_line[:, 3]
    )


def test_embed_cubes_refuses_a_cube_of_another_grid(tmp_path, model_and_config):
    model, config = model_and_config
    flux, ivar, mask = make_cube(np.random.default_rng(0), 32)
    path = write_cube(tmp_path, "8485-1901", flux, ivar, mask)
    with pytest.raises(CubeFormatError, match=r"cube 8485-1901 \(.*8485-1901\.npz\) has flux"):
        embed_cubes(model, config, [("8485-1901", path)])


def test_latents_table_has_the_pipelines_columns(tmp_path, model_and_config):
    model, config = model_and_config
    cubes = write_cubes(tmp_path, 3, grid=GRID, seed=13)
    result = embed_cubes(model, config, cubes, batch_size=2)
    table = latents_table(result, config, model_id="m1", cube_digests=["a", "b", "c"])
    assert list(table.columns) == latents_table_columns(config.latent_dim, config.line_names)
    assert table["plateifu"].tolist() == result.plateifus
    assert table["model_id"].tolist() == ["m1"] * 3 and table["cube_digest"].tolist() == list("abc")
    np.testing.assert_array_equal(table[[f"z{i:02d}" for i in range(6)]], result.latents)
    np.testing.assert_array_equal(table["recon_error"], result.recon_error)
    line = config.line_names[2]
    np.testing.assert_array_equal(table[f"chi2_{line}"], result.chi2_per_line[:, 2])
    # Without a model identity or cube digests (a benchmark's table): the same columns, empty.
    bare = latents_table(result, config)
    assert list(bare.columns) == list(table.columns) and set(bare["cube_digest"]) == {""}
