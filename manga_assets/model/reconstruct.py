"""One galaxy through a published model: its reconstruction and where it departs from it.

`reconstruct` passes one cube through the model exactly as `manga_assets.model.inference.embed`
does for the pipeline's latents (the same normalisation, noise weights, systematic floor and
PSF-sized smoothing), but keeps the maps that the pipeline reduces to one number per line:

- the reconstruction in the cube's flux units;
- the residual per pixel in units of the noise, with the model's own uncertainty counted
  (its square is the chi-square the anomaly scores sum);
- the PSF-smoothed residual significance per pixel (its maximum is the ``peak_<line>`` of the
  latents table): where, and in which line, the galaxy departs coherently from the model.

torch is imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Reconstruction:
    """A galaxy's maps next to the model's (all arrays (L, H, W), in the model's line order).

    Attributes
    ----------
    lines : tuple of str
    model_flux : numpy.ndarray, float64
        The reconstruction in 1E-17 erg/s/cm^2/spaxel; NaN where the cube has no valid pixel.
    residual : numpy.ndarray, float64
        ``(data - model) sqrt(w_eff)``: the residual in noise units (noise and the model's
        systematic floor); NaN where invalid.
    smoothed_residual : numpy.ndarray, float64
        Significance of the PSF-smoothed residual, signed (positive where the data are brighter
        than the model); NaN where the kernel saw too few valid pixels.
    coherent_peak : numpy.ndarray, float64 (L,)
        Peak of ``|smoothed_residual|`` per line (the latents' ``peak_<line>``), 0 without data.
    valid : numpy.ndarray of bool
    scale : float
        The galaxy's normalisation scale.
    """

    lines: tuple[str, ...]
    model_flux: np.ndarray
    residual: np.ndarray
    smoothed_residual: np.ndarray
    coherent_peak: np.ndarray
    valid: np.ndarray
    scale: float


def load_published_model(model_dir: Path | str) -> tuple[Any, Any]:
    """The published model of ``models/<variant>/`` (model.pt + config.json), in evaluation mode.

    Raises `manga_assets.model.checkpoint.CheckpointError` (naming the file and what to do) when
    the model is missing or unreadable.
    """
    from manga_assets.model.checkpoint import load_model

    return load_model(model_dir, device="cpu")


def reconstruct(
    model: Any, model_config: Any, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray
) -> Reconstruction:
    """Reconstruct one cube with a loaded model (`load_published_model`).

    Parameters
    ----------
    model : ConvLSTMAutoencoder
    model_config : ModelConfig
    flux, ivar : numpy.ndarray, (L, H, W)
        As stored in ``cubes/<plate>/<plateifu>.npz`` (1E-17 erg/s/cm^2/spaxel and its inverse
        variance), in the model's line order on the model's grid
        (`manga_assets.model.dataset.read_cube` checks both).
    mask : numpy.ndarray of bool, (L, H, W)
        True where invalid.

    Raises
    ------
    ValueError
        If the cube's shape is not the model's.
    """
    import torch

    from manga_assets.model.autoencoder import effective_weight
    from manga_assets.model.dataset import noise_weight
    from manga_assets.model.inference import smoothed_residual_significance
    from manga_assets.model.normalise import galaxy_scale, normalise, valid_pixels

    expected = (model_config.n_lines, model_config.grid, model_config.grid)
    if np.shape(flux) != expected or np.shape(ivar) != expected or np.shape(mask) != expected:
        raise ValueError(
            f"the model takes one cube of shape {expected}, got flux {np.shape(flux)}, ivar "
            f"{np.shape(ivar)} and mask {np.shape(mask)}; rebuild the cube on the model's grid"
        )
    normalisation = model_config.normalisation
    valid = valid_pixels(flux, mask, ivar)
    scale = galaxy_scale(flux, valid, model_config.line_names, normalisation)
    x = normalise(flux[None], valid[None], scale, normalisation)
    weight = noise_weight(ivar, valid, scale)[None]
    model = model.eval()
    with torch.inference_mode():
        x_tensor = torch.from_numpy(x)
        valid_tensor = torch.from_numpy(valid[None])
        weight_tensor = torch.from_numpy(weight)
        reconstruction = model.decode(model.encode(x_tensor, valid_tensor))
        terms = model.uncertain_chi_square_terms(
            reconstruction, x_tensor, weight_tensor, valid_tensor
        )
        signed = torch.sign(x_tensor - reconstruction.float()) * terms.sqrt()
        model_flux = model.model_flux(reconstruction)
        floor = model.line_floor()
        model_snr = model_flux.abs() * effective_weight(model_flux, weight_tensor, floor).sqrt()
        smoothed = smoothed_residual_significance(signed, model_snr, valid_tensor, floor)
    smoothed_map = smoothed[0].double().numpy()
    with np.errstate(invalid="ignore"):
        peak = np.nan_to_num(np.nanmax(np.abs(smoothed_map), axis=(1, 2), initial=0.0))
    return Reconstruction(
        lines=tuple(model_config.line_names),
        model_flux=model_flux[0].double().numpy() * scale,
        residual=np.where(valid, signed[0].double().numpy(), np.nan),
        smoothed_residual=smoothed_map,
        coherent_peak=peak,
        valid=valid,
        scale=float(scale),
    )


def explainer(
    model_dir: Path | str, load_cube: Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> Callable[[str], Reconstruction]:
    """``explain(plateifu)``: the published model's reconstruction of a galaxy.

    The model is loaded at the first call, so that a report with no galaxy to explain never
    reads it; ``load_cube(plateifu)`` gives the galaxy's ``(flux, ivar, mask)``.
    """
    loaded: list[tuple[Any, Any]] = []

    def explain(plateifu: str) -> Reconstruction:
        if not loaded:
            loaded.append(load_published_model(model_dir))
        model, model_config = loaded[0]
        return reconstruct(model, model_config, *load_cube(plateifu))

    return explain
