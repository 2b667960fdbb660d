"""Is a trained model good enough to publish? A quality gate in units of the noise.

Three predictors are scored on the same validation galaxies by the same chi-square
(`manga_assets.model.autoencoder.chi_square_terms`, per valid pixel):

- the mean map: each line's mean training map (what the model starts from);
- a weighted PCA with as many components as the model has latent dimensions: components of the
  training split's maps, each validation galaxy fitted by noise-weighted least squares;
- the model.

A perfect model scores about 1 per pixel (the noise); the mean map scores ``chi2_base`` > 1. The
fraction of the mean map's excess over the noise that the model removes,

    FEV = (chi2_base - chi2_model) / (chi2_base - 1),

means the same on 50 galaxies and on 10,000, on quiet and on noisy ones: 0 is no better than the
mean map, 1 is noise-limited. Its 95 % interval comes from a bootstrap over validation galaxies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from manga_assets.model.autoencoder import ConvLSTMAutoencoder, per_line_chi_square
from manga_assets.model.dataset import TrainingSet
from manga_assets.model.normalise import denormalise, normalise

# The gate: the lower end of FEV's 95 % interval must reach this...
DEFAULT_MIN_FEV = 0.5
# ...when the validation split holds this many galaxies; below, the gate only warns.
MIN_GALAXIES_TO_BLOCK = 30
# At most this many training galaxies define the PCA components (memory: N x 19 x 32 x 32).
PCA_MAX_TRAINING_GALAXIES = 2000
# A VAE latent dimension is active when its mean KL over validation galaxies exceeds this (nats).
ACTIVE_KL_NATS = 0.01
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class QualityReport:
    """The gate's measurements and decision.

    Attributes
    ----------
    n_val : int
        Validation galaxies scored.
    chi2_model, chi2_pca, chi2_mean_map : float
        Chi-square per valid pixel over the validation split.
    fev, fev_low, fev_high : float
        FEV and its bootstrap 95 % interval.
    pca_components : int
    active_latent_dims : int
        VAE: dimensions with mean KL above `ACTIVE_KL_NATS`; AE: the latent size.
    min_fev : float
    blocking : bool
        Whether the validation split is large enough for the gate to block.
    passed : bool
        FEV's lower bound >= min_fev and chi2_model <= chi2_pca (always True when not blocking).
    problems : list of str
        What failed, worded for the user (also when only warning).
    """

    n_val: int
    chi2_model: float
    chi2_pca: float
    chi2_mean_map: float
    fev: float
    fev_low: float
    fev_high: float
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


def fev_interval(
    chi2_model: np.ndarray,
    chi2_base: np.ndarray,
    counts: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """FEV of pooled per-pixel chi-squares and its bootstrap 95 % interval over galaxies."""

    def fev(indices: np.ndarray) -> np.ndarray:
        n = counts[indices].sum(axis=-1).clip(1)
        model = chi2_model[indices].sum(axis=-1) / n
        base = chi2_base[indices].sum(axis=-1) / n
        return (base - model) / np.maximum(base - 1.0, 1e-12)

    everyone = np.arange(len(counts))
    rng = np.random.default_rng(seed)
    resampled = fev(rng.integers(0, len(counts), size=(samples, len(counts))))
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(fev(everyone)), float(low), float(high)


def assess_model(
    model: ConvLSTMAutoencoder,
    training_set: TrainingSet,
    *,
    min_fev: float = DEFAULT_MIN_FEV,
    min_galaxies_to_block: int = MIN_GALAXIES_TO_BLOCK,
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
    n_pixels = max(int(counts.sum()), 1)
    fev, low, high = fev_interval(chi2, chi2_base, counts, seed=seed)
    per_pixel = {
        "model": chi2.sum() / n_pixels,
        "pca": chi2_pca.sum() / n_pixels,
        "mean_map": chi2_base.sum() / n_pixels,
    }
    active = (
        int((kl.mean(axis=0) > ACTIVE_KL_NATS).sum())
        if model.config.variant == "vae"
        else model.config.latent_dim
    )
    problems = []
    if low < min_fev:
        problems.append(
            f"the model removes {fev:.2f} (95% interval {low:.2f}-{high:.2f}) of the mean map's "
            f"chi-square excess over the noise, below the bar of {min_fev:g} "
            f"(validation chi2 per pixel: model {per_pixel['model']:.3f}, mean map "
            f"{per_pixel['mean_map']:.3f}, noise 1)"
        )
    if per_pixel["model"] > per_pixel["pca"]:
        problems.append(
            f"a weighted PCA with {components.shape[0]} components fits the validation galaxies "
            f"better (chi2 per pixel {per_pixel['pca']:.3f}) than the model "
            f"({per_pixel['model']:.3f})"
        )
    return QualityReport(
        n_val=len(val_rows),
        chi2_model=float(per_pixel["model"]),
        chi2_pca=float(per_pixel["pca"]),
        chi2_mean_map=float(per_pixel["mean_map"]),
        fev=fev,
        fev_low=low,
        fev_high=high,
        pca_components=int(components.shape[0]),
        active_latent_dims=active,
        min_fev=min_fev,
        blocking=blocking,
        passed=not (blocking and problems),
        problems=problems,
    )
