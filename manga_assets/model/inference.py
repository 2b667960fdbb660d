"""Inference: latent vectors and reconstruction errors of cubes, with the model's normalisation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from manga_assets.model.autoencoder import ConvLSTMAutoencoder, ModelConfig, per_galaxy_errors
from manga_assets.model.dataset import read_cube
from manga_assets.model.normalise import galaxy_scale, normalise, valid_pixels


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
        Squared error per valid pixel, in the normalised space; NaN for a cube with no valid pixel.
    recon_error_per_line : numpy.ndarray, float64 (N, L)
        The same per line; NaN where a line has no valid pixel.
    n_valid_pixels : numpy.ndarray, int64 (N,)
    scale : numpy.ndarray, float64 (N,)
        Normalisation scale of each cube (1E-17 erg/s/cm^2/spaxel).
    plateifus : list of str
        The galaxies' names as given (``#i`` when none were).
    """

    latents: np.ndarray
    recon_error: np.ndarray
    recon_error_per_line: np.ndarray
    n_valid_pixels: np.ndarray
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
        frame["scale"] = self.scale
        return frame


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

    device = torch.device(device)
    model = model.to(device).eval()
    normalisation = model_config.normalisation
    latents = np.empty((n_galaxies, model_config.latent_dim), dtype=np.float32)
    sse_line = np.zeros((n_galaxies, model_config.n_lines), dtype=np.float64)
    count_line = np.zeros((n_galaxies, model_config.n_lines), dtype=np.int64)
    scales = np.empty(n_galaxies, dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, n_galaxies, batch_size):
            stop = min(start + batch_size, n_galaxies)
            batch_ivar = None if ivar is None else np.asarray(ivar[start:stop])
            valid = valid_pixels(flux[start:stop], mask[start:stop], batch_ivar)
            for offset, galaxy in enumerate(range(start, stop)):
                scales[galaxy] = galaxy_scale(
                    flux[galaxy], valid[offset], model_config.line_names, normalisation
                )
            x = normalise(flux[start:stop], valid, scales[start:stop], normalisation)
            x_tensor = torch.from_numpy(x).to(device)
            valid_tensor = torch.from_numpy(valid).to(device)
            latent = model.encode(x_tensor)  # (B, D)
            reconstruction = model.decode(latent)  # (B, L, H, W)
            latent = latent.float().cpu().numpy()
            finite = np.isfinite(latent).all(axis=1)
            if not finite.all():
                bad = [names[start + i] for i in np.flatnonzero(~finite)]
                raise InferenceError(
                    f"non-finite latent vectors for galaxies {bad}; check these cubes, or the "
                    f"model (retrain it if every galaxy fails)"
                )
            latents[start:stop] = latent
            sse, count, _, _ = per_galaxy_errors(reconstruction.float(), x_tensor, valid_tensor)
            sse_line[start:stop] = sse.double().cpu().numpy()
            count_line[start:stop] = count.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        per_line = np.where(count_line > 0, sse_line / count_line, np.nan)
        n_valid = count_line.sum(axis=1)
        per_galaxy = np.where(n_valid > 0, sse_line.sum(axis=1) / n_valid, np.nan)
    return EmbedResult(
        latents=latents,
        recon_error=per_galaxy,
        recon_error_per_line=per_line,
        n_valid_pixels=n_valid,
        scale=scales,
        plateifus=names,
    )


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
