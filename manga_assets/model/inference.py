"""Inference: latent vectors and noise-weighted residuals of cubes, with the model's normalisation.

Per galaxy and line, `embed` measures the chi-square of the reconstruction (the training loss,
`manga_assets.model.autoencoder.chi_square_terms`), its number of valid pixels, the peak of the
residual map smoothed with a PSF-sized kernel (`coherent_peaks`) and the residual summed over
the whole footprint (`extended_residuals`). White noise scores about 1 per pixel in the first
and stays low in the others; a ring, a second nucleus or a line whose morphology disagrees with
the others raises the peak, and a line brighter or fainter than the model over the whole galaxy,
too faint per spaxel to stand out in any one place, raises the sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from manga_assets.model.autoencoder import (
    ConvLSTMAutoencoder,
    ModelConfig,
    effective_weight,
    per_line_chi_square,
)
from manga_assets.model.dataset import noise_weight, read_cube
from manga_assets.model.normalise import galaxy_scale, normalise, valid_pixels

# Gaussian sigma, in grid cells, of the kernel that smooths residual maps: about the MaNGA PSF
# (2.5 arcsec FWHM = 5 spaxels) on the grid of a mid-sized bundle (~1.7 spaxels per cell).
RESIDUAL_SMOOTHING_CELLS = 1.25
# Smoothed residuals count only where the kernel saw at least this share of valid pixels.
MIN_SMOOTHING_COVERAGE = 0.5
# The latents' per-line columns: column prefix -> the `EmbedResult` array that fills them.
PER_LINE_FIELDS = {
    "chi2_": "chi2_per_line",
    "n_": "n_valid_per_line",
    "peak_": "coherent_peak_per_line",
    "extended_": "extended_residual_per_line",
}


class InferenceError(RuntimeError):
    """The model produced unusable output (e.g. NaN latents); the message names the galaxies."""


@dataclass
class EmbedResult:
    """Per-galaxy outputs of `embed` (numpy arrays, galaxies in input order).

    Attributes
    ----------
    latents : numpy.ndarray, float32 (N, D)
        The code (AE) or posterior mean (VAE).
    recon_error : numpy.ndarray, float64 (N,)
        Chi-square per valid pixel (reduced chi-square); NaN for a cube with no valid pixel.
    chi2_per_line : numpy.ndarray, float64 (N, L)
        Chi-square sum per line (0 where a line has no valid pixel).
    n_valid_per_line : numpy.ndarray, int64 (N, L)
    coherent_peak_per_line : numpy.ndarray, float64 (N, L)
        Peak |smoothed residual| in noise units per line (`coherent_peaks`); 0 without data.
    extended_residual_per_line : numpy.ndarray, float64 (N, L)
        Residual summed over the footprint in noise units per line (`extended_residuals`);
        positive where the line is brighter than the model; 0 without data.
    n_valid_pixels : numpy.ndarray, int64 (N,)
    median_snr : numpy.ndarray, float64 (N,)
        Median S/N per valid pixel of the reference line (H-alpha), 0 without one: how deep the
        galaxy was observed, to calibrate the anomaly scores at equal depth.
    integrated_snr : numpy.ndarray, float64 (N,)
        S/N of the reference line's flux summed over its valid pixels, 0 without one: whether
        the galaxy has line emission at all (a faint emitter still sums to a clear detection).
    scale : numpy.ndarray, float64 (N,)
        Normalisation scale of each cube (1E-17 erg/s/cm^2/spaxel).
    plateifus : list of str
        The galaxies' names as given (``#i`` when none were).
    """

    latents: np.ndarray
    recon_error: np.ndarray
    chi2_per_line: np.ndarray
    n_valid_per_line: np.ndarray
    coherent_peak_per_line: np.ndarray
    extended_residual_per_line: np.ndarray
    n_valid_pixels: np.ndarray
    median_snr: np.ndarray
    integrated_snr: np.ndarray
    scale: np.ndarray
    plateifus: list[str]

    def to_frame(self, prefix: str = "z") -> pd.DataFrame:
        """One row per galaxy: plateifu, latent columns ``{prefix}00``.., recon_error."""
        width = max(2, len(str(self.latents.shape[1] - 1)))
        frame = pd.DataFrame(
            self.latents, columns=[f"{prefix}{i:0{width}d}" for i in range(self.latents.shape[1])]
        )
        frame.insert(0, "plateifu", self.plateifus)
        frame["recon_error"] = self.recon_error
        frame["n_valid_pixels"] = self.n_valid_pixels
        frame["median_snr"] = self.median_snr
        frame["integrated_snr"] = self.integrated_snr
        frame["scale"] = self.scale
        return frame

    def per_line_frame(self, lines: Sequence[str]) -> pd.DataFrame:
        """One row per galaxy, the per-line columns `per_line_columns` names (in that order)."""
        return pd.DataFrame(
            {
                f"{prefix}{line}": getattr(self, field)[:, index]
                for prefix, field in PER_LINE_FIELDS.items()
                for index, line in enumerate(lines)
            }
        )


def per_line_columns(lines: Sequence[str]) -> list[str]:
    """``chi2_<line>`` (chi-square), ``n_<line>`` (valid pixels), ``peak_<line>`` (coherent
    peak) and ``extended_<line>`` (extended residual) for every line: the latents' per-line
    columns, which the anomaly scores read."""
    return [f"{prefix}{line}" for prefix in PER_LINE_FIELDS for line in lines]


def latents_table_columns(latent_dim: int, lines: Sequence[str]) -> list[str]:
    """The columns of a latents table (:func:`latents_table`), in order."""
    latent = [f"z{i:02d}" for i in range(latent_dim)]
    return [
        "plateifu", "model_id", "cube_digest", *latent, "recon_error", "median_snr",
        "integrated_snr", *per_line_columns(lines),
    ]  # fmt: skip


def latents_table(
    result: EmbedResult,
    config: ModelConfig,
    *,
    model_id: str = "",
    cube_digests: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per galaxy embedded: its latents, errors and per-line residuals, with the model
    that made them and its cube's digest (the pipeline's ``{variant}/latents`` and the
    benchmarks' tables alike).

    Parameters
    ----------
    result : EmbedResult
    config : ModelConfig
        The model's configuration (its latent size and lines name the columns).
    model_id : str
        The model's identity (`manga_assets.model.publish`); '' where there is none.
    cube_digests : sequence of str, optional
        Each cube's digest (:func:`manga_assets.provenance.cube_digests`), in ``result``'s
        order; '' for every row when not given. With ``model_id`` it lets a later run tell a row
        made by another model or from an older cube.
    """
    latent = [f"z{i:02d}" for i in range(config.latent_dim)]
    table = pd.DataFrame(result.latents, columns=latent)
    table.insert(0, "plateifu", result.plateifus)
    table.insert(1, "model_id", str(model_id))
    table.insert(2, "cube_digest", list(cube_digests) if cube_digests is not None else "")
    table["recon_error"] = result.recon_error
    table["median_snr"] = result.median_snr
    table["integrated_snr"] = result.integrated_snr
    table = pd.concat([table, result.per_line_frame(config.line_names)], axis=1)
    return table[latents_table_columns(config.latent_dim, config.line_names)]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (profile[:, None] * profile[None, :]).float()


def per_line_floor(
    systematic_floor: float | torch.Tensor, lines: int, device: torch.device
) -> torch.Tensor:
    """A floor given as one value or one per line, as a (T,) float tensor."""
    eps = torch.as_tensor(systematic_floor, dtype=torch.float32, device=device).reshape(-1)
    return eps.expand(lines) if eps.numel() == 1 else eps


def coherent_peaks(
    residual: torch.Tensor,
    model_snr: torch.Tensor,
    valid: torch.Tensor,
    systematic_floor: float | torch.Tensor,
    sigma: float = RESIDUAL_SMOOTHING_CELLS,
) -> torch.Tensor:
    """Peak of the PSF-smoothed residual map per galaxy and line, in noise units with a
    coherent floor.

    Parameters
    ----------
    residual : Tensor, (B, T, H, W)
        ``(x - x_hat) sqrt(w_eff)``: unit variance where the model is right; 0 where invalid.
    model_snr : Tensor, (B, T, H, W)
        ``|x_hat| sqrt(w_eff)``: the model's own S/N per pixel.
    valid : Tensor of bool, (B, T, H, W)
    systematic_floor : float or Tensor
        eps, the model's fractional uncertainty, one value or one per line
        (`ConvLSTMAutoencoder.line_floor`).
    sigma : float
        Kernel sigma in grid cells.

    Returns
    -------
    Tensor, (B, T)
        ``max |sum_k k r| / sqrt(sum_k k^2 + (eps sum_k k |x_hat| sqrt(w_eff))^2)`` over pixels
        whose kernel saw enough valid pixels. Uncorrelated unit noise gives a smoothed map of
        unit variance, so a peak of a few is what noise does, while a residual structure the
        size of the PSF or larger adds up over the kernel. The model's error is as wide as the
        kernel too: its floor, counted once over the kernel rather than pixel by pixel, keeps a
        bright nucleus missed by a few per cent ordinary, while structure the model leaves out
        (a ring, a second nucleus, where x_hat is small) gains nothing from it.
    """
    significance = smoothed_residual_significance(
        residual, model_snr, valid, systematic_floor, sigma
    )
    return significance.abs().nan_to_num(0.0).amax(dim=(-2, -1))


def smoothed_residual_significance(
    residual: torch.Tensor,
    model_snr: torch.Tensor,
    valid: torch.Tensor,
    systematic_floor: float | torch.Tensor,
    sigma: float = RESIDUAL_SMOOTHING_CELLS,
) -> torch.Tensor:
    """The signed significance map of the PSF-smoothed residual, (B, T, H, W): the statistic
    whose peak is `coherent_peaks`, kept per pixel so that a person can see where it peaks
    (positive where the data are brighter than the model). NaN where the kernel saw fewer valid
    pixels than ``MIN_SMOOTHING_COVERAGE``; the arguments are those of `coherent_peaks`.
    """
    import torch.nn.functional as F

    kernel = _gaussian_kernel(sigma).to(residual.device)
    padding = kernel.shape[-1] // 2
    batch, lines, height, width = residual.shape

    def smooth(image: torch.Tensor, weights: torch.Tensor = kernel) -> torch.Tensor:
        flat = image.reshape(batch * lines, 1, height, width).float()
        return F.conv2d(flat, weights[None, None], padding=padding)

    valid_float = valid.float()
    smoothed = smooth(residual)  # already 0 where invalid
    eps = per_line_floor(systematic_floor, lines, residual.device).repeat(batch)
    spread = smooth(valid_float, kernel**2) + (
        eps.view(-1, 1, 1, 1) * smooth(model_snr * valid_float)
    ) ** 2
    usable = smooth(valid_float) / kernel.sum() >= MIN_SMOOTHING_COVERAGE
    significance = torch.where(usable, smoothed / spread.clamp_min(1e-12).sqrt(), float("nan"))
    return significance.reshape(batch, lines, height, width)


def extended_residuals(
    residual: torch.Tensor,
    model_snr: torch.Tensor,
    valid: torch.Tensor,
    systematic_floor: float | torch.Tensor,
) -> torch.Tensor:
    """The residual summed over each line's footprint, in noise units with a coherent floor.

    Parameters
    ----------
    residual : Tensor, (B, T, H, W)
        ``(x - x_hat) sqrt(w_eff)``, signed; 0 where invalid.
    model_snr : Tensor, (B, T, H, W)
        ``|x_hat| sqrt(w_eff)``: the model's own S/N per pixel.
    valid : Tensor of bool, (B, T, H, W)
    systematic_floor : float or Tensor
        eps, the model's fractional uncertainty, one value or one per line
        (`ConvLSTMAutoencoder.line_floor`).

    Returns
    -------
    Tensor, (B, T)
        ``sum r / sqrt(N + (eps sum |x_hat| sqrt(w_eff))^2)`` over the N valid pixels. White noise
        gives a unit normal value. The chi-square's floor treats the model's error as independent
        from pixel to pixel, but an error of the model's flux scale is the same everywhere and
        adds up over the footprint: the floor's eps, counted once over the galaxy, keeps a deep
        galaxy's few-per-cent misfit ordinary, while a line the model leaves out entirely (its
        x_hat near 0) gains nothing from it.
    """
    valid_float = valid.float()
    total = (residual.float() * valid_float).sum(dim=(-2, -1))
    count = valid_float.sum(dim=(-2, -1))
    model_total = (model_snr.float() * valid_float).sum(dim=(-2, -1))
    eps = per_line_floor(systematic_floor, residual.shape[1], residual.device)
    spread = (count + (eps * model_total) ** 2).clamp_min(1.0).sqrt()
    return torch.where(count > 0, total / spread, torch.zeros_like(total))


def embed(
    model: ConvLSTMAutoencoder,
    model_config: ModelConfig,
    flux: np.ndarray,
    ivar: np.ndarray | None,
    mask: np.ndarray,
    batch_size: int = 64,
    *,
    lines: Sequence[str] | None = None,
    plateifus: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> EmbedResult:
    """Encode and reconstruct cubes in physical units.

    Parameters
    ----------
    model : ConvLSTMAutoencoder
        E.g. from `manga_assets.model.checkpoint.load_model`; put in evaluation mode here.
    model_config : ModelConfig
        The model's configuration (lines, grid, normalisation).
    flux : numpy.ndarray, (N, L, H, W)
        Fluxes in 1E-17 erg/s/cm^2/spaxel, as stored in the cubes.
    ivar : numpy.ndarray or None, (N, L, H, W)
        Inverse variances; if given, pixels with ivar <= 0 count as invalid too (as in training).
    mask : numpy.ndarray of bool, (N, L, H, W)
        True where invalid.
    batch_size : int
        Galaxies per forward pass.
    lines : sequence of str, optional
        The cubes' line names (their ``lines`` array); refused unless equal to the model's.
    plateifus : sequence of str, optional
        Names of the N galaxies, used in error messages.
    device : str or torch.device

    Returns
    -------
    EmbedResult

    Raises
    ------
    ValueError
        If the cubes' lines or grid differ from the model's, or the arrays disagree in shape.
    InferenceError
        If a latent vector is not finite (the galaxy is named).
    """
    flux, mask, names = _checked_cubes(model_config, flux, ivar, mask, lines, plateifus)
    n_galaxies = flux.shape[0]
    device = torch.device(device)
    model = model.to(device).eval()
    latents = np.empty((n_galaxies, model_config.latent_dim), dtype=np.float32)
    per_line = {
        field: np.zeros(
            (n_galaxies, model_config.n_lines),
            dtype=np.int64 if field == "n_valid_per_line" else np.float64,
        )
        for field in PER_LINE_FIELDS.values()
    }
    median_snr = np.zeros(n_galaxies, dtype=np.float64)
    integrated_snr = np.zeros(n_galaxies, dtype=np.float64)
    scales = np.empty(n_galaxies, dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, n_galaxies, batch_size):
            stop = min(start + batch_size, n_galaxies)
            inputs = model_inputs(
                flux[start:stop],
                None if ivar is None else ivar[start:stop],
                mask[start:stop],
                model_config,
            )
            scales[start:stop] = inputs.scale
            median_snr[start:stop], integrated_snr[start:stop] = reference_line_snr(
                flux[start:stop], inputs, model_config
            )
            fit = _fit_batch(model, inputs, device, names[start:stop])
            latents[start:stop] = fit.pop("latents")
            for field, values in fit.items():
                per_line[field][start:stop] = values
    count_line = per_line["n_valid_per_line"]
    with np.errstate(invalid="ignore", divide="ignore"):
        n_valid = count_line.sum(axis=1)
        chi2_sum = per_line["chi2_per_line"].sum(axis=1)
        recon_error = np.where(n_valid > 0, chi2_sum / n_valid, np.nan)
    return EmbedResult(
        latents=latents,
        recon_error=recon_error,
        **per_line,
        n_valid_pixels=n_valid,
        median_snr=median_snr,
        integrated_snr=integrated_snr,
        scale=scales,
        plateifus=names,
    )


def _checked_cubes(
    model_config: ModelConfig,
    flux: np.ndarray,
    ivar: np.ndarray | None,
    mask: np.ndarray,
    lines: Sequence[str] | None,
    plateifus: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``flux`` and ``mask`` as arrays, and the galaxies' names, once they fit the model.

    Raises
    ------
    ValueError
        If the cubes' lines or grid differ from the model's, or the arrays disagree in shape.
    """
    expected = (model_config.n_lines, model_config.grid, model_config.grid)
    if lines is not None and tuple(lines) != tuple(model_config.line_names):
        raise ValueError(
            f"the cubes hold the lines {list(lines)}, but the model was trained on "
            f"{list(model_config.line_names)}; rebuild the cubes with the model's lines or "
            f"retrain the model"
        )
    flux = np.asarray(flux)
    mask = np.asarray(mask, dtype=bool)
    if flux.ndim != 4 or flux.shape[1:] != expected:
        raise ValueError(
            f"the model takes cubes of shape (N, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"({model_config.n_lines} lines on a {model_config.grid}x{model_config.grid} grid), "
            f"got {flux.shape}; rebuild the cubes on the model's grid or retrain the model"
        )
    if mask.shape != flux.shape or (ivar is not None and np.shape(ivar) != flux.shape):
        raise ValueError(
            f"flux {flux.shape}, mask {mask.shape} and ivar "
            f"{None if ivar is None else np.shape(ivar)} must have the same shape"
        )
    n_galaxies = flux.shape[0]
    if plateifus is not None and len(plateifus) != n_galaxies:
        raise ValueError(f"{len(plateifus)} plate-IFUs for {n_galaxies} cubes")
    names = list(plateifus) if plateifus is not None else [f"#{i}" for i in range(n_galaxies)]
    return flux, mask, names


@dataclass
class ModelInputs:
    """Cubes as the model sees them (`model_inputs`).

    Attributes
    ----------
    x : numpy.ndarray, float32 (N, L, H, W)
        Normalised fluxes (`manga_assets.model.normalise.normalise`).
    valid : numpy.ndarray of bool, (N, L, H, W)
    weight : numpy.ndarray, float32 (N, L, H, W)
        Inverse variances in normalised units (`manga_assets.model.dataset.noise_weight`);
        1 on every valid pixel when no inverse variances were given.
    scale : numpy.ndarray, float64 (N,)
        Each cube's normalisation scale (1E-17 erg/s/cm^2/spaxel).
    """

    x: np.ndarray
    valid: np.ndarray
    weight: np.ndarray
    scale: np.ndarray


def model_inputs(
    flux: np.ndarray,
    ivar: np.ndarray | None,
    mask: np.ndarray,
    model_config: ModelConfig,
) -> ModelInputs:
    """Normalise cubes with the model's normalisation, as `embed` does before encoding.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray, (N, L, H, W)
        As `embed` takes them (``ivar`` may be None); the lines must be the model's.
    model_config : ModelConfig
    """
    normalisation = model_config.normalisation
    ivar = None if ivar is None else np.asarray(ivar)
    valid = valid_pixels(flux, mask, ivar)
    scale = np.array(
        [
            galaxy_scale(flux[i], valid[i], model_config.line_names, normalisation)
            for i in range(len(flux))
        ],
        dtype=np.float64,
    )
    x = normalise(flux, valid, scale, normalisation)
    if ivar is None:
        weight = valid.astype(np.float32)
    else:
        weight = np.stack([noise_weight(ivar[i], valid[i], scale[i]) for i in range(len(flux))])
    return ModelInputs(x=x, valid=valid, weight=weight, scale=scale)


def reference_line_snr(
    flux: np.ndarray, inputs: ModelInputs, model_config: ModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per galaxy, the median S/N per valid pixel of the reference line and the S/N of its
    summed flux (`EmbedResult.median_snr`, `EmbedResult.integrated_snr`); 0 without one."""
    median_snr = np.zeros(len(flux), dtype=np.float64)
    integrated_snr = np.zeros(len(flux), dtype=np.float64)
    lines = list(model_config.line_names)
    reference = model_config.normalisation.reference_line
    if reference not in lines:
        return median_snr, integrated_snr
    line = lines.index(reference)
    for i in range(len(flux)):
        good = inputs.valid[i, line] & (inputs.weight[i, line] > 0)
        x_good = flux[i, line][good] / inputs.scale[i]
        w_good = inputs.weight[i, line][good]
        if x_good.size:
            median_snr[i] = float(np.median(x_good * np.sqrt(w_good)))
            integrated_snr[i] = float(x_good.sum() / np.sqrt((1.0 / w_good).sum()))
    return median_snr, integrated_snr


def _fit_batch(
    model: ConvLSTMAutoencoder,
    inputs: ModelInputs,
    device: torch.device,
    names: Sequence[str],
) -> dict[str, np.ndarray]:
    """Latents and per-line residual measures of one batch (`EmbedResult`'s field names)."""
    x = torch.from_numpy(inputs.x).to(device)
    valid = torch.from_numpy(inputs.valid).to(device)
    weight = torch.from_numpy(inputs.weight).to(device)
    latent = model.encode(x, valid)  # (B, D)
    reconstruction = model.decode(latent)  # (B, L, H, W)
    latent = latent.float().cpu().numpy()
    finite = np.isfinite(latent).all(axis=1)
    if not finite.all():
        bad = [names[i] for i in np.flatnonzero(~finite)]
        raise InferenceError(
            f"non-finite latent vectors for galaxies {bad}; check these cubes, or the "
            f"model (retrain it if every galaxy fails)"
        )
    # Scores count residuals against the noise and the model's own uncertainty.
    terms = model.uncertain_chi_square_terms(reconstruction, x, weight, valid)
    chi2, count = per_line_chi_square(terms, valid)
    signed = torch.sign(x - reconstruction.float()) * terms.sqrt()
    model_flux = model.model_flux(reconstruction)
    floor = model.line_floor()
    model_snr = model_flux.abs() * effective_weight(model_flux, weight, floor).sqrt()
    return {
        "latents": latent,
        "chi2_per_line": chi2.double().cpu().numpy(),
        "n_valid_per_line": count.cpu().numpy(),
        "coherent_peak_per_line": (
            coherent_peaks(signed, model_snr, valid, floor).double().cpu().numpy()
        ),
        "extended_residual_per_line": (
            extended_residuals(signed, model_snr, valid, floor).double().cpu().numpy()
        ),
    }


def embed_cubes(
    model: ConvLSTMAutoencoder,
    model_config: ModelConfig,
    cubes: Iterable[tuple[str, Path]],
    batch_size: int = 64,
    *,
    device: str | torch.device = "cpu",
) -> EmbedResult:
    """`embed` the cube files of, e.g., one plate (all read into memory at once).

    Parameters
    ----------
    cubes : iterable of (plateifu, path)
        ``cubes/{plate}/{plateifu}.npz`` files; each is checked against the model's lines and
        grid (`manga_assets.model.dataset.read_cube`).

    Raises
    ------
    CubeFormatError
        If a cube has other lines or another grid (naming the plate-IFU and file).
    InferenceError
        If a latent vector is not finite.
    """
    names, fluxes, ivars, masks = [], [], [], []
    for plateifu, path in cubes:
        flux, ivar, mask = read_cube(
            path, plateifu, line_names=model_config.line_names, grid=model_config.grid
        )
        names.append(plateifu)
        fluxes.append(flux)
        ivars.append(ivar)
        masks.append(mask)
    if not names:
        empty = np.empty((0, model_config.n_lines, model_config.grid, model_config.grid))
        return embed(model, model_config, empty, None, empty.astype(bool), plateifus=[])
    return embed(
        model,
        model_config,
        np.stack(fluxes),
        np.stack(ivars),
        np.stack(masks),
        batch_size,
        lines=model_config.line_names,
        plateifus=names,
        device=device,
    )
