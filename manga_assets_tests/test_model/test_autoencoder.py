from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.autoencoder import (
    GALAXY_LOSS_SCALE,
    ConvLSTMAutoencoder,
    ModelConfig,
    chi_square_terms,
    robust_galaxy_loss,
)
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
    assert set(losses) == {"chi2", "kl", "total"}
    assert all(value.shape == () for value in losses.values())


def test_default_model_shapes_and_size():
    model = ConvLSTMAutoencoder(ModelConfig())
    reconstruction, _ = model(torch.zeros(1, 19, 32, 32))
    assert reconstruction.shape == (1, 19, 32, 32)
    assert 100_000 < model.get_num_params() < 1_500_000


def test_wrong_input_shape_is_refused():
    model = ConvLSTMAutoencoder(tiny_config())
    with pytest.raises(ValueError, match=r"\(batch, 19, 16, 16\)"):
        model(torch.zeros(2, 18, GRID, GRID))


def test_chi_square_is_in_units_of_the_noise_and_ignores_invalid_pixels():
    generator = torch.Generator().manual_seed(0)
    flux = torch.randn(2, 19, 4, 4, generator=generator)
    weight = torch.rand(2, 19, 4, 4, generator=generator) * 100 + 1
    valid = torch.rand(2, 19, 4, 4, generator=generator) > 0.3
    model_flux = flux + 2.0 / weight.sqrt()  # every residual is exactly 2 sigma
    terms = chi_square_terms(model_flux, flux, weight, valid, systematic_floor=0.0)
    assert torch.allclose(terms[valid], torch.full_like(terms[valid], 4.0))
    assert (terms[~valid] == 0).all()

    garbage = torch.where(valid, model_flux, torch.full_like(flux, 1e30))
    garbage_terms = chi_square_terms(garbage, flux, weight, valid, systematic_floor=0.0)
    assert torch.equal(garbage_terms, terms)


def test_systematic_floor_softens_bright_pixels_only():
    flux = torch.tensor([0.01, 10.0])
    weight = torch.tensor([1e4, 1e4])  # sigma 0.01 in both
    model_flux = flux + 0.05  # 5 sigma off in both
    terms = chi_square_terms(model_flux, flux, weight, torch.ones(2, dtype=torch.bool), 0.05)
    assert terms[0].item() == pytest.approx(25 / (1 + 1e4 * (0.05 * 0.06) ** 2), rel=1e-4)
    # At 10 (1000 sigma) the 5% floor dominates: the 0.05 miss is 0.1 of its error bar.
    assert terms[1].item() < 0.02


def test_floor_gives_no_gradient_for_inflating_the_model_flux():
    flux = torch.tensor([1.0])
    model_flux = torch.tensor([1.5], requires_grad=True)
    chi_square_terms(model_flux, flux, torch.tensor([100.0]), torch.tensor([True])).sum().backward()
    assert model_flux.grad.item() > 0  # pulled towards the data, not outwards


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
        losses.append(loss["chi2"].item())
    assert losses[0] == losses[1]


def _expected_total(model, x, valid, weight, kl_per_galaxy):
    """The loss written out: per galaxy chi2 + 2 beta KL per valid pixel, through
    c log(1 + x/c), plus the learned floor's likelihood per valid pixel, averaged over galaxies."""
    reconstruction = model.decode(model.encode_distribution(x, valid)[0])
    pixels = valid.sum((1, 2, 3))
    chi2 = model.chi_square_terms(reconstruction, x, weight, valid).sum((1, 2, 3))
    per_galaxy = (chi2 + 2.0 * model.config.kl_weight * kl_per_galaxy) / pixels
    floor = model.likelihood_terms(reconstruction, x, weight, valid).sum((1, 2, 3)) / pixels
    robust = GALAXY_LOSS_SCALE * torch.log1p(per_galaxy / GALAXY_LOSS_SCALE)
    return (robust.mean() + floor.mean()).item()


def test_the_learned_floor_takes_no_part_in_fitting_the_weights():
    torch.manual_seed(0)
    x = torch.randn(2, 19, GRID, GRID) * 0.3
    weight = torch.full_like(x, 1e4)
    model = ConvLSTMAutoencoder(tiny_config()).train()
    _, losses = model(x, torch.ones_like(x, dtype=torch.bool), weight)
    floor_gradient = torch.autograd.grad(
        losses["total"], model.decoder_upsample[-1].weight, retain_graph=True
    )[0]
    with torch.no_grad():
        model.log_learned_floor.fill_(0.0)  # a floor of 105 %
    _, losses = model(x, torch.ones_like(x, dtype=torch.bool), weight)
    changed = torch.autograd.grad(losses["total"], model.decoder_upsample[-1].weight)[0]
    torch.testing.assert_close(changed, floor_gradient)


def test_loss_is_each_galaxys_chi_square_bounded_and_the_vae_adds_beta_kl():
    torch.manual_seed(0)
    x = torch.randn(4, 19, GRID, GRID) * 0.3
    valid = torch.rand(4, 19, GRID, GRID) > 0.2
    weight = torch.rand(4, 19, GRID, GRID) * 50
    ae = ConvLSTMAutoencoder(tiny_config("ae")).eval()
    _, ae_losses = ae(x, valid, weight)
    assert ae_losses["kl"].item() == 0.0
    assert ae_losses["total"].item() == pytest.approx(
        _expected_total(ae, x, valid, weight, torch.zeros(4)), rel=1e-5
    )

    for beta in (1.0, 4.0):
        torch.manual_seed(0)
        vae = ConvLSTMAutoencoder(tiny_config("vae", beta=beta)).eval()
        _, losses = vae(x, valid, weight)
        assert losses["kl"].item() > 0
        # The KL is that of the posterior the encoder returns, in nats per galaxy.
        mean, log_variance = vae.encode_distribution(x, valid)
        kl = 0.5 * (mean**2 + log_variance.exp() - 1 - log_variance).sum(1)
        assert losses["kl"].item() == pytest.approx(kl.mean().item(), rel=1e-5)
        expected = _expected_total(vae, x, valid, weight, kl)
        assert losses["total"].item() == pytest.approx(expected, rel=1e-5)


def test_one_badly_fitted_galaxy_cannot_dominate_the_gradient():
    """A galaxy fitted at 1000 times its noise weighs in the gradient about as a galaxy
    fitted at 10 times (each by its relative improvement), not 100 times more."""
    misfit = torch.tensor([10.0, 1000.0], requires_grad=True)
    robust_galaxy_loss(misfit).backward()
    relative = misfit.grad * misfit.detach()  # d loss / d log(misfit)
    assert relative[1] / relative[0] < 2.0


def test_the_learned_floor_settles_at_the_fractional_misfit():
    """Data scattered by 30 % around the model at S/N 1000: maximising the likelihood over the
    learned floor alone brings the model's uncertainty to about 30 %."""
    torch.manual_seed(0)
    model = ConvLSTMAutoencoder(tiny_config()).eval()
    truth = torch.full((8, 19, GRID, GRID), 2.0)
    data = truth * (1.0 + 0.3 * torch.randn_like(truth))
    weight = torch.full_like(truth, 1e6 / 4.0)  # S/N 1000 on a flux of 2
    valid = torch.ones_like(truth, dtype=torch.bool)
    stretched = normalise_linear(truth, model)
    x = normalise_linear(data, model)
    optimiser = torch.optim.Adam([model.log_learned_floor], lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        model.likelihood_terms(stretched, x, weight, valid).mean().backward()
        optimiser.step()
    np.testing.assert_allclose(model.line_floor().detach().flatten().numpy(), 0.3, rtol=0.1)


def normalise_linear(linear: torch.Tensor, model: ConvLSTMAutoencoder) -> torch.Tensor:
    """Linear normalised maps to the stretched units the model draws."""
    valid = torch.ones_like(linear, dtype=torch.bool)
    return normalise(linear, valid, 1.0, model.config.normalisation)


def test_encoder_sees_validity_not_the_values_behind_invalid_pixels():
    torch.manual_seed(0)
    model = ConvLSTMAutoencoder(tiny_config()).eval()
    x = torch.randn(1, 19, GRID, GRID) * 0.3
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[:, 4] = False  # one whole line missing
    changed = x.clone()
    changed[:, 4] = 5.0
    assert torch.equal(model.encode(x, valid), model.encode(changed, valid))
    # A missing line and a line of zero flux are different inputs.
    zero_line = x.clone()
    zero_line[:, 4] = 0.0
    assert not torch.equal(model.encode(zero_line, valid), model.encode(zero_line))


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


def test_first_decoder_layer_computes_its_input_convolutions_once():
    """The first decoder ConvLSTM reads the latent map plus line t's embedding at step t; its
    input convolutions, computed once per galaxy and once per line, are the per-step ones."""
    torch.manual_seed(6)
    model = ConvLSTMAutoencoder(tiny_config())
    with torch.no_grad():
        model.line_embedding.normal_()
    lstm = model.decoder_lstm[0]
    assert lstm.input_kernel_size == lstm.kernel_size == 3  # a 3x3 input costs nothing here
    channels, side = model.config.encoder_channels[-1], model.config.bottleneck_grid
    drive = torch.randn(2, channels, side, side)
    state = (torch.randn(2, channels, side, side), torch.randn(2, channels, side, side))

    expected, _ = lstm(drive[:, None] + model.line_embedding, state)
    gates = model._first_decoder_input_gates(lstm, drive)
    got, _ = lstm.forward_gates(gates, state)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_configuration_saved_without_input_kernel_size_is_the_earlier_model():
    saved = ModelConfig().to_dict()
    del saved["input_kernel_size"]
    assert ModelConfig.from_dict(saved).input_kernel_size == 3
    assert ModelConfig(input_kernel_size=1).to_dict()["input_kernel_size"] == 1
