"""Tiny synthetic inputs for the analysis tests: line-map cubes with chosen BPT ratios, latents."""

from __future__ import annotations

import numpy as np
import pandas as pd

from manga_assets.dap.datamodel import PROJECT_LINES

LINES = PROJECT_LINES
HA_FLUX = 100.0


def cube_from_ratios(ratios: np.ndarray, snr: float = 50.0) -> tuple[np.ndarray, ...]:
    """A (19, H, W) cube whose spaxels have the given log ratios.

    Parameters
    ----------
    ratios : ndarray, (H, W, 4)
        log [NII]/Ha, log [SII]/Ha (doublet sum, split equally), log [OI]/Ha, log [OIII]/Hb per
        spaxel.
    snr : float
        S/N of every line of every spaxel.

    Returns
    -------
    flux, ivar, mask
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    height, width = ratios.shape[:2]
    flux = np.ones((len(LINES), height, width))
    index = {name: i for i, name in enumerate(LINES)}
    hb = HA_FLUX / 2.86
    flux[index["Ha-6564"]] = HA_FLUX
    flux[index["Hb-4862"]] = hb
    flux[index["NII-6585"]] = HA_FLUX * 10 ** ratios[..., 0]
    flux[index["SII-6718"]] = HA_FLUX * 10 ** ratios[..., 1] / 2
    flux[index["SII-6732"]] = HA_FLUX * 10 ** ratios[..., 1] / 2
    flux[index["OI-6302"]] = HA_FLUX * 10 ** ratios[..., 2]
    flux[index["OIII-5008"]] = hb * 10 ** ratios[..., 3]
    ivar = (snr / flux) ** 2
    mask = np.zeros(flux.shape, dtype=bool)
    return flux.astype(np.float32), ivar.astype(np.float32), mask


def spaxel_row(*points: tuple[float, float, float, float]) -> np.ndarray:
    """A (1, n, 4) ratio grid from (x_nii, x_sii, x_oi, y) points."""
    return np.asarray(points, dtype=np.float64)[None, :, :]


def plateifu(i: int) -> str:
    """A valid, distinct plate-IFU for galaxy ``i``."""
    return (
        f"{8000 + i // 10}-{(12701, 1901, 1902, 3701, 3702, 6101, 6102, 9101, 9102, 12702)[i % 10]}"
    )


LATENT_LINES = ("Hb-4862", "OIII-5008", "Ha-6564")


def latents_table(n: int, dim: int = 8, seed: int = 0, pixels: int = 400) -> pd.DataFrame:
    """A latents table of ``n`` galaxies a model reproduces to their noise.

    Latents are two Gaussian clusters; per line, ``pixels`` valid pixels, a chi-square drawn
    from the chi-square distribution with that many degrees of freedom, the smoothed residual
    peak of white noise (about 3) and its summed residual (unit normal).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(2, dim))
    z = centres[rng.integers(0, 2, size=n)] + rng.normal(size=(n, dim))
    table = pd.DataFrame(z, columns=[f"z{i:02d}" for i in range(dim)])
    table.insert(0, "plateifu", [plateifu(i) for i in range(n)])
    chi2 = {line: rng.chisquare(pixels, size=n) for line in LATENT_LINES}
    table["recon_error"] = sum(chi2.values()) / (pixels * len(LATENT_LINES))
    table["median_snr"] = rng.lognormal(mean=2.0, sigma=0.5, size=n)
    # Summed over the footprint, even the shallowest galaxy is a clear detection.
    table["integrated_snr"] = table["median_snr"] * np.sqrt(pixels)
    for line in LATENT_LINES:
        table[f"chi2_{line}"] = chi2[line]
        table[f"n_{line}"] = pixels
        table[f"peak_{line}"] = 3.0 + 0.4 * rng.standard_normal(n)
        table[f"extended_{line}"] = rng.standard_normal(n)
    return table
