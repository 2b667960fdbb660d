"""The quality gate: FEV in units of the noise, its interval, and the weighted-PCA baseline."""

import numpy as np
import pytest
import torch

from manga_assets.model.autoencoder import ConvLSTMAutoencoder
from manga_assets.model.dataset import open_training_set
from manga_assets.model.quality import assess_model, pca_basis
from manga_assets.model.typical_fit import galaxy_fev, typical_fev_interval


@pytest.fixture
def trained(trained_ae):
    return trained_ae


def test_a_trained_model_passes_and_a_zeroed_decoder_fails(trained, easy_training_set):
    training_set = open_training_set(easy_training_set)
    report = assess_model(trained.model, training_set, min_galaxies_to_block=1)
    assert report.passed, report.problems
    assert report.chi2_model < report.chi2_pca < report.chi2_mean_map
    assert report.fev_low <= report.fev <= report.fev_high and report.fev > 0.5
    assert report.active_latent_dims == 8

    broken = ConvLSTMAutoencoder(trained.model.config)
    broken.load_state_dict(trained.model.state_dict())
    with torch.no_grad():
        for layer in (*broken.decoder_upsample, broken.latent_to_maps):
            layer.weight.zero_()
            layer.bias.zero_()
    failed = assess_model(broken, training_set, min_galaxies_to_block=1)
    # A zeroed decoder draws the mean map: it removes none of the excess over the noise.
    assert failed.fev == pytest.approx(0.0, abs=1e-6)
    assert not failed.passed
    assert any("below the bar of 0.5" in problem for problem in failed.problems)
    assert any("weighted PCA" in problem for problem in failed.problems)


def test_the_gate_only_warns_on_a_small_validation_split(trained, easy_training_set):
    training_set = open_training_set(easy_training_set)
    report = assess_model(trained.model, training_set, min_fev=2.0)
    assert report.n_val < 30 and not report.blocking
    assert report.passed and report.problems


def test_fev_is_the_share_of_the_excess_over_the_noise_removed():
    counts = np.full(50, 100)
    base = np.full(50, 500.0)  # 5 per pixel
    model = np.full(50, 200.0)  # 2 per pixel: 3 of the 4 excess units removed
    fev, low, high = typical_fev_interval(galaxy_fev(model, base, counts))
    assert fev == pytest.approx(0.75) and low == pytest.approx(0.75) and high == pytest.approx(0.75)
    noisy = model + np.random.default_rng(0).normal(0, 50, 50)
    fev, low, high = typical_fev_interval(galaxy_fev(noisy, base, counts))
    assert low < fev < high and high - low < 0.2


def test_pca_components_are_orthonormal(easy_training_set):
    mean, components = pca_basis(open_training_set(easy_training_set), 6)
    assert components.shape == (6, mean.size)
    np.testing.assert_allclose(components @ components.T, np.eye(6), atol=1e-4)
