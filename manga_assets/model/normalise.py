"""Per-galaxy normalisation of line-map cubes for the network, and its inverse.

A cube's fluxes span orders of magnitude between galaxies (distance, luminosity) and between lines.
The network should see shapes and line ratios, not the brightness of the galaxy, so:

1. every cube is divided by ONE scale shared by all its lines, which keeps the line ratios; the
   scale is a high percentile of the valid, positive pixels of a reference line (H-alpha by
   default: the brightest line of almost every galaxy), falling back to the same percentile of all
   valid positive fluxes when the reference line has too few such pixels, and to 1 when no flux is
   positive at all;
2. the scaled flux f is stretched with ``asinh(f / a) / asinh(1 / a)`` (softening a): linear for
   |f| << a, logarithmic above, so faint lines keep some weight in a squared-error loss, negative
   (noise) fluxes stay defined, and f = 1 maps to 1;
3. invalid pixels are set to 0 (the loss ignores them anyway).

The parameters live in `Normalisation`, which the model configuration carries, so that inference
applies exactly the normalisation the model was trained with. Functions accept numpy arrays or
torch tensors and return the same kind.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

Array = TypeVar("Array")


@dataclass(frozen=True)
class Normalisation:
    """How a cube is scaled and stretched before the network sees it.

    Parameters
    ----------
    reference_line : str
        Line whose valid positive pixels set the galaxy's scale (default ``"Ha-6564"``).
    percentile : float
        Percentile (0-100) of those pixels that becomes 1 after scaling (default 99: robust to a
        few hot pixels, close to the peak).
    softening : float
        Softening a of the asinh stretch, in units of the scale (default 0.2: linear below about
        20 % of the scale, logarithmic above). Smaller values give faint lines more weight but
        amplify their noise by up to 1/a relative to the bright pixels, and noise no model can
        reproduce then dominates the loss.
    min_reference_pixels : int
        Fewest valid positive reference-line pixels for the reference line to be used (default 5).
    """

    reference_line: str = "Ha-6564"
    percentile: float = 99.0
    softening: float = 0.2
    min_reference_pixels: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if not self.softening > 0.0:
            raise ValueError(f"softening must be positive, got {self.softening}")
        if self.min_reference_pixels < 1:
            raise ValueError(
                f"min_reference_pixels must be at least 1, got {self.min_reference_pixels}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return asdict(self)


def valid_pixels(flux: np.ndarray, mask: np.ndarray, ivar: np.ndarray | None = None) -> np.ndarray:
    """Which pixels the network may use: not masked, finite flux and, when given, positive ivar.

    Parameters
    ----------
    flux, mask : numpy.ndarray, (..., L, H, W)
        Fluxes and the invalid-pixel mask (True where invalid) of one or more cubes.
    ivar : numpy.ndarray, optional
        Inverse variances of the same shape; pixels with ``ivar <= 0`` or non-finite are invalid.

    Returns
    -------
    numpy.ndarray of bool, same shape as ``flux``
    """
    valid = ~np.asarray(mask, dtype=bool) & np.isfinite(flux)
    if ivar is not None:
        ivar = np.asarray(ivar)
        with np.errstate(invalid="ignore"):
            valid &= np.isfinite(ivar) & (ivar > 0)
    return valid


def galaxy_scale(
    flux: np.ndarray,
    valid: np.ndarray,
    line_names: tuple[str, ...] | list[str],
    normalisation: Normalisation,
) -> float:
    """The single flux scale of one cube (see the module notes).

    Parameters
    ----------
    flux, valid : numpy.ndarray, (L, H, W)
        Fluxes (1E-17 erg/s/cm^2/spaxel) and validity of one cube.
    line_names : sequence of str
        The L line names, to find the reference line.
    normalisation : Normalisation

    Returns
    -------
    float
        The scale, positive and finite, in the units of ``flux``.
    """
    if flux.shape != valid.shape or flux.ndim != 3 or flux.shape[0] != len(line_names):
        raise ValueError(
            f"galaxy_scale expects flux and valid of shape ({len(line_names)}, H, W), got "
            f"{flux.shape} and {valid.shape}"
        )
    line_names = list(line_names)
    if normalisation.reference_line in line_names:
        reference = line_names.index(normalisation.reference_line)
        values = flux[reference][valid[reference]]
        values = values[values > 0]
        if values.size >= normalisation.min_reference_pixels:
            return float(np.percentile(values, normalisation.percentile))
    values = flux[valid]
    values = values[values > 0]
    if values.size:
        scale = float(np.percentile(values, normalisation.percentile))
        if math.isfinite(scale) and scale > 0:
            return scale
    return 1.0


def _broadcast_scale(scale: Any, ndim: int, like: Any) -> Any:
    """Scale as an array broadcastable against a (..., L, H, W) array of ``ndim`` dimensions."""
    if isinstance(like, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    else:
        scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim == 0:
        return scale
    # One scale per cube: (N,) -> (N, 1, 1, 1) for (N, L, H, W) input.
    return scale.reshape(tuple(scale.shape) + (1,) * (ndim - scale.ndim))


def normalise(flux: Array, valid: Array, scale: Any, normalisation: Normalisation) -> Array:
    """Scale, stretch and zero the invalid pixels of one or more cubes.

    Parameters
    ----------
    flux : numpy.ndarray or torch.Tensor, (L, H, W) or (N, L, H, W)
        Fluxes in 1E-17 erg/s/cm^2/spaxel.
    valid : same kind, bool, same shape
    scale : float or array of shape (N,)
        From `galaxy_scale`, one per cube.
    normalisation : Normalisation

    Returns
    -------
    Same kind and shape as ``flux``, float32 for numpy input
        ``asinh(flux / scale / a) / asinh(1 / a)`` on valid pixels, 0 elsewhere.
    """
    a = normalisation.softening
    scale = _broadcast_scale(scale, flux.ndim, flux)
    if isinstance(flux, torch.Tensor):
        stretched = torch.asinh(flux / (scale * a)) / math.asinh(1.0 / a)
        return torch.where(valid, stretched, torch.zeros_like(stretched))
    with np.errstate(invalid="ignore", over="ignore"):
        stretched = np.arcsinh(np.asarray(flux, dtype=np.float64) / (scale * a))
    stretched /= math.asinh(1.0 / a)
    return np.where(valid, stretched, 0.0).astype(np.float32)


def denormalise(x: Array, scale: Any, normalisation: Normalisation) -> Array:
    """The inverse of `normalise` on valid pixels: fluxes in the cube's units.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, (L, H, W) or (N, L, H, W)
        Normalised maps (e.g. a reconstruction).
    scale : float or array of shape (N,)
    normalisation : Normalisation

    Returns
    -------
    Same kind and shape as ``x``
        ``scale * a * sinh(x * asinh(1 / a))``.
    """
    a = normalisation.softening
    scale = _broadcast_scale(scale, x.ndim, x)
    if isinstance(x, torch.Tensor):
        return scale * a * torch.sinh(x * math.asinh(1.0 / a))
    x = np.asarray(x)
    flux = scale * a * np.sinh(x.astype(np.float64) * math.asinh(1.0 / a))
    return flux.astype(x.dtype if x.dtype.kind == "f" else np.float64)
