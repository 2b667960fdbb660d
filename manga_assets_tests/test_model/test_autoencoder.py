from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig, masked_mse
from manga_assets.model.normalise import galaxy_scale, normalise, valid_pixels
from manga_assets_tests.test_model.conftest import GRID, tiny_config
from manga_assets_tests.test_model.cubes import make_cube


def test_default_config_matches_the_project():
    config = ModelConfig()
    assert config.line_names == PROJECT_LINES
    assert (config.n_lines, config.grid, config.latent_dim) == (19, 32, 32)
    assert config.bottleneck_grid == 8


@pytest.mark.parametrize("variant", ["ae", "vae"])
def test_shapes(variant: str):
    torch.manual_seed(0)
    model = ConvLSTMAutoencoder(tiny_config(variant, latent_dim=6))
    x = torch.randn(3, 19, GRID, GRID)
    reconstruction, losses = model(x)
    assert reconstruction.shape == (3, 19, GRID, GRID)
    assert model.encode(x).shape == (3, 6)
    assert model.decode(torch.zeros(2, 6)).shape == (2, 19, GRID, GRID)
    assert set(losses) == {"recon", "kl", "total"}
    assert all(value.shape == () for value in losses.values())


def test_default_model_shapes_and_size():
    model = ConvLSTMAutoencoder(ModelConfig())
    reconstruction, _ = model(torch.zeros(1, 19, 32, 32))
    assert reconstruction.shape == (1, 19, 32, 32)
    assert 100_000 < model.get_num_params() < 1_000_000


def test_wrong_input_shape_is_refused():
    model = ConvLSTMAutoencoder(tiny_config())
    with pytest.raises(ValueError, match=r"\(batch, 19, 16, 16\)"):
        model(torch.zeros(2, 18, GRID, GRID))


def test_masked_mse_ignores_invalid_pixels_and_counts_valid_ones():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 19, 4, 4, generator=generator)
    valid = torch.rand(2, 19, 4, 4, generator=generator) > 0.3
    reconstruction = target + 1.0  # error exactly 1 on every pixel
    assert masked_mse(reconstruction, target, valid).item() == pytest.approx(1.0)

    garbage_target = torch.where(valid, target, torch.full_like(target, float("nan")))
    garbage_reconstruction = torch.where(valid, reconstruction, torch.full_like(target, 1e30))
    assert masked_mse(garbage_reconstruction, garbage_target, valid).item() == pytest.approx(1.0)
    assert masked_mse(reconstruction, target, torch.zeros_like(valid)).item() == 0.0


def test_model_loss_does_not_depend_on_invalid_pixels():
    """Whatever a cube holds in its invalid pixels, the model's input and loss are the same."""
    rng = np.random.default_rng(3)
    flux, ivar, mask = make_cube(rng, GRID)
    valid = valid_pixels(flux, mask, ivar)
    config = tiny_config()
    scale = galaxy_scale(flux, valid, config.line_names, config.normalisation)
    garbage = flux.copy()
    garbage[~valid] = rng.normal(0.0, 1e4, (~valid).sum())
    model = ConvLSTMAutoencoder(config).eval()

    losses = []
    for cube in (flux, garbage):
        x = torch.from_numpy(normalise(cube, valid, scale, config.normalisation))[None]
        _, loss = model(x, torch.from_numpy(valid)[None])
        losses.append(loss["recon"].item())
    assert losses[0] == losses[1]


def test_vae_has_positive_kl_and_weights_it_by_beta():
    torch.manual_seed(0)
    x = torch.randn(4, 19, GRID, GRID) * 0.3
    ae = ConvLSTMAutoencoder(tiny_config("ae")).eval()
    assert ae(x)[1]["kl"].item() == 0.0
    assert ae(x)[1]["total"].item() == ae(x)[1]["recon"].item()

    for beta in (1.0, 4.0):
        torch.manual_seed(0)
        config = tiny_config("vae", beta=beta, vae_sigma=0.2)
        vae = ConvLSTMAutoencoder(config).eval()
        _, losses = vae(x)
        assert losses["kl"].item() > 0
        # total = recon + beta * KL * 2 sigma^2 / (pixels per cube)
        weight = beta * 2 * 0.2**2 / (19 * GRID * GRID)
        assert config.kl_weight == pytest.approx(weight)
        expected = losses["recon"].item() + weight * losses["kl"].item()
        assert losses["total"].item() == pytest.approx(expected, rel=1e-6)
        # The KL is that of the posterior the encoder returns, in nats per galaxy.
        mean, log_variance = vae._encode_distribution(x)
        kl = 0.5 * (mean**2 + log_variance.exp() - 1 - log_variance).sum(1).mean()
        assert losses["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


def test_vae_samples_in_training_and_uses_the_mean_otherwise():
    torch.manual_seed(0)
    vae = ConvLSTMAutoencoder(tiny_config("vae"))
    x = torch.randn(2, 19, GRID, GRID) * 0.3
    vae.train()
    assert not torch.equal(vae(x)[0], vae(x)[0])
    vae.eval()
    assert torch.equal(vae(x)[0], vae(x)[0])
    assert torch.equal(vae(x)[0], vae.decode(vae.encode(x)))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ConvLSTMAutoencoder(tiny_config("vae"))
    _, losses = model(torch.randn(2, 19, GRID, GRID) * 0.3)
    losses["total"].backward()
    without = [name for name, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert without == []


def test_config_round_trips_through_json():
    config = tiny_config("vae", beta=0.5, norm_softening=0.1)
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.line_names, tuple)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variant": "gan"}, "variant must be one of"),
        ({"grid": 30}, "grid=30 must be a multiple of 4"),
        ({"n_lines": 18}, "n_lines=18 but 19 line names"),
        ({"norm_softening": 0.0}, "softening must be positive"),
        ({"kernel_size": 4}, "kernel_size must be a positive odd integer"),
    ],
)
def test_bad_configs_are_refused(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_from_dict_refuses_unknown_fields():
    values = tiny_config().to_dict() | {"dropout": 0.1}
    with pytest.raises(ValueError, match=r"unknown ModelConfig fields \['dropout'\]"):
        ModelConfig.from_dict(values)
