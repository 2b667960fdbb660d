"""Is a trained model good enough to publish? A quality gate in units of the noise.

Three predictors are scored on the same validation galaxies by the same chi-square
(`manga_assets.model.autoencoder.chi_square_terms`, per valid pixel):

- the mean map: each line's mean training map (what the model starts from);
- a weighted PCA with as many components as the model has latent dimensions: components of the
  training split's maps, each validation galaxy fitted by noise-weighted least squares;
- the model.

A perfect model scores about 1 per pixel (the noise); the mean map scores more. The gate's
statistic is the typical galaxy's FEV (`manga_assets.model.typical_fit`): per galaxy, the share of
the mean map's excess over the noise that the model removes; over galaxies, the median. It means
the same on 50 galaxies and on 10,000, on quiet and on noisy ones, and no single galaxy decides it
(a pooled chi-square is decided by the brightest, oddest galaxies). Its 95 % interval comes from
a bootstrap over validation galaxies. The pooled chi-squares per pixel are reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from manga_assets.model import defaults
from manga_assets.model.autoencoder import ConvLSTMAutoencoder, per_line_chi_square
from manga_assets.model.dataset import TrainingSet
from manga_assets.model.normalise import denormalise, normalise
from manga_assets.model.typical_fit import (
    MIN_TYPICAL_GALAXIES,
    galaxy_fev,
    typical_fev,
    typical_fev_interval,
)

# The gate: the lower end of FEV's 95 % interval must reach this (with at least
# MIN_TYPICAL_GALAXIES validation galaxies; below, the gate only warns).
DEFAULT_MIN_FEV = defaults.MIN_FEV
# At most this many training galaxies define the PCA components (memory: N x 19 x 32 x 32).
PCA_MAX_TRAINING_GALAXIES = 2000
# A VAE latent dimension is active when its mean KL over validation galaxies exceeds this (nats).
ACTIVE_KL_NATS = 0.01


@dataclass(frozen=True)
class QualityReport:
    """The gate's measurements and decision.

    Attributes
    ----------
    n_val : int
        Validation galaxies scored.
    n_fev : int
        Of them, galaxies with something to explain (`manga_assets.model.typical_fit`).
    chi2_model, chi2_pca, chi2_mean_map : float
        Chi-square per valid pixel pooled over the validation split (for information).
    fev, fev_low, fev_high : float
        The typical galaxy's FEV (median over galaxies) and its bootstrap 95 % interval.
    fev_pca : float
        The same for the weighted PCA.
    fev_pooled : float
        FEV of the pooled chi-squares (for information: the brightest galaxies decide it).
    pca_components : int
    active_latent_dims : int
        VAE: dimensions with mean KL above `ACTIVE_KL_NATS`; AE: the latent size.
    min_fev : float
    blocking : bool
        Whether the validation split is large enough for the gate to block.
    passed : bool
        FEV's lower bound >= min_fev, and the PCA's FEV not above FEV's upper bound (always True
        when not blocking).
    problems : list of str
        What failed, worded for the user (also when only warning).
    """

    n_val: int
    n_fev: int
    chi2_model: float
    chi2_pca: float
    chi2_mean_map: float
    fev: float
    fev_low: float
    fev_high: float
    fev_pca: float
    fev_pooled: float
    pca_components: int
    active_latent_dims: int
    min_fev: float
    blocking: bool
    passed: bool
    problems: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _linear(training_set: TrainingSet, rows: np.ndarray) -> np.ndarray:
    """Normalised linear maps x = f / s of some rows, flattened, float32 (n, L*H*W)."""
    stretched = np.asarray(training_set.flux[rows], dtype=np.float32)
    return denormalise(stretched, 1.0, training_set.normalisation).reshape(len(rows), -1)


def pca_basis(
    training_set: TrainingSet, n_components: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean map and the leading principal components of the training split, in linear units.

    Invalid pixels are filled with the mean map before the decomposition. Returns the mean
    (P,) and the components (K, P), P = L*H*W.
    """
    rows = training_set.rows("train")
    if len(rows) > PCA_MAX_TRAINING_GALAXIES:
        rows = np.sort(np.random.default_rng(seed).choice(rows, PCA_MAX_TRAINING_GALAXIES, False))
    x = _linear(training_set, rows).astype(np.float64)
    valid = np.asarray(training_set.valid[rows]).reshape(len(rows), -1)
    counts = valid.sum(axis=0)
    mean = np.divide((x * valid).sum(axis=0), counts, out=np.zeros(x.shape[1]), where=counts > 0)
    centred = np.where(valid, x - mean, 0.0)
    # The Gram matrix is n x n, far smaller than P x P.
    gram = centred @ centred.T
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][: min(n_components, len(rows))]
    components = eigenvectors[:, order].T @ centred
    components /= np.linalg.norm(components, axis=1, keepdims=True).clip(1e-12)
    return mean.astype(np.float32), components.astype(np.float32)


def pca_chi_square(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    rows: np.ndarray,
    mean: np.ndarray,
    components: np.ndarray,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square sums and valid counts per galaxy of the noise-weighted PCA fit of ``rows``."""
    shape = training_set.flux.shape[1:]
    chi2 = np.zeros(len(rows))
    counts = np.zeros(len(rows), dtype=np.int64)
    mean_t, basis = torch.from_numpy(mean), torch.from_numpy(components).T  # (P,), (P, K)
    ridge = 1e-6 * torch.eye(basis.shape[1])
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        x = torch.from_numpy(_linear(training_set, chunk))
        valid = torch.from_numpy(np.asarray(training_set.valid[chunk]).reshape(len(chunk), -1))
        weight = torch.from_numpy(np.asarray(training_set.weight[chunk]).reshape(len(chunk), -1))
        weight = torch.where(valid, weight, torch.zeros_like(weight))
        weighted_basis = weight[:, :, None] * basis  # (B, P, K)
        normal = basis.T @ weighted_basis + ridge  # (B, K, K)
        rhs = torch.einsum("bpk,bp->bk", weighted_basis, x - mean_t)
        coefficients = torch.linalg.solve(normal, rhs)
        fitted = mean_t + coefficients @ basis.T
        stretched = normalise(fitted, valid, 1.0, training_set.normalisation)
        stored = torch.from_numpy(np.asarray(training_set.flux[chunk], dtype=np.float32))
        terms = model.chi_square_terms(
            stretched.view(len(chunk), *shape),
            stored,
            weight.view(len(chunk), *shape),
            valid.view(len(chunk), *shape),
        )
        line_chi2, line_count = per_line_chi_square(terms, valid.view(len(chunk), *shape))
        chi2[start : start + len(chunk)] = line_chi2.sum(1).double().numpy()
        counts[start : start + len(chunk)] = line_count.sum(1).numpy()
    return chi2, counts


@torch.no_grad()
def model_chi_square(
    model: ConvLSTMAutoencoder, training_set: TrainingSet, rows: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per galaxy of ``rows``: model and mean-map chi-square sums, valid counts, and KL per dim."""
    model = model.eval()
    chi2, chi2_base = np.zeros(len(rows)), np.zeros(len(rows))
    counts = np.zeros(len(rows), dtype=np.int64)
    kl = np.zeros((len(rows), model.config.latent_dim))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        x = torch.from_numpy(np.asarray(training_set.flux[chunk]))
        valid = torch.from_numpy(np.asarray(training_set.valid[chunk]))
        weight = torch.from_numpy(np.asarray(training_set.weight[chunk]))
        mean, log_variance = model.encode_distribution(x, valid)
        reconstruction = model.decode(mean)
        terms = model.chi_square_terms(reconstruction, x, weight, valid)
        base_terms = model.chi_square_terms(model.mean_maps.expand_as(x), x, weight, valid)
        span = slice(start, start + len(chunk))
        chi2[span] = terms.double().sum(dim=(1, 2, 3)).numpy()
        chi2_base[span] = base_terms.double().sum(dim=(1, 2, 3)).numpy()
        counts[span] = valid.sum(dim=(1, 2, 3)).numpy()
        if log_variance is not None:
            # gaussian_kl's terms, before its sum over dimensions
            per_dim = 0.5 * (mean**2 + log_variance.exp() - 1.0 - log_variance)
            kl[span] = per_dim.double().numpy()
    return chi2, chi2_base, counts, kl


def assess_model(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    *,
    min_fev: float = DEFAULT_MIN_FEV,
    min_galaxies_to_block: int = MIN_TYPICAL_GALAXIES,
    seed: int = 0,
) -> QualityReport:
    """Score the model, the mean map and a weighted PCA on the validation split; decide.

    The validation split stands in for new galaxies; when it is empty the training split is used
    and the gate only warns.
    """
    val_rows = training_set.rows("val")
    blocking = len(val_rows) >= min_galaxies_to_block
    if len(val_rows) == 0:
        val_rows = training_set.rows("train")
    chi2, chi2_base, counts, kl = model_chi_square(model, training_set, val_rows)
    n_components = model.config.latent_dim
    mean, components = pca_basis(training_set, n_components, seed)
    chi2_pca, _ = pca_chi_square(model, training_set, val_rows, mean, components)
    per_galaxy = galaxy_fev(chi2, chi2_base, counts)
    fev, low, high = typical_fev_interval(per_galaxy, seed=seed)
    fev_pca = typical_fev(galaxy_fev(chi2_pca, chi2_base, counts))
    n_pixels = max(int(counts.sum()), 1)
    per_pixel = {
        "model": chi2.sum() / n_pixels,
        "pca": chi2_pca.sum() / n_pixels,
        "mean_map": chi2_base.sum() / n_pixels,
    }
    excess = max(per_pixel["mean_map"] - 1.0, 1e-12)
    fev_pooled = (per_pixel["mean_map"] - per_pixel["model"]) / excess
    active = (
        int((kl.mean(axis=0) > ACTIVE_KL_NATS).sum())
        if model.config.variant == "vae"
        else model.config.latent_dim
    )
    problems = []
    if not low >= min_fev:  # NaN (no galaxy to explain) fails too
        problems.append(
            f"the typical validation galaxy keeps too much of the mean map's chi-square excess "
            f"over the noise: the model removes a median {fev:.2f} (95% interval "
            f"{low:.2f}-{high:.2f}) of it per galaxy, below the bar of {min_fev:g} (pooled "
            f"validation chi2 per pixel: model {per_pixel['model']:.3f}, mean map "
            f"{per_pixel['mean_map']:.3f}, noise 1)"
        )
    if high < fev_pca:  # clearly better, beyond the model's own interval
        problems.append(
            f"a weighted PCA with {components.shape[0]} components fits the typical validation "
            f"galaxy better (median FEV {fev_pca:.3f}) than the model ({fev:.3f}, 95% interval "
            f"{low:.3f}-{high:.3f})"
        )
    return QualityReport(
        n_val=len(val_rows),
        n_fev=int(np.isfinite(per_galaxy).sum()),
        chi2_model=float(per_pixel["model"]),
        chi2_pca=float(per_pixel["pca"]),
        chi2_mean_map=float(per_pixel["mean_map"]),
        fev=fev,
        fev_low=low,
        fev_high=high,
        fev_pca=fev_pca,
        fev_pooled=float(fev_pooled),
        pca_components=int(components.shape[0]),
        active_latent_dims=active,
        min_fev=min_fev,
        blocking=blocking,
        passed=not (blocking and problems),
        problems=problems,
    )
