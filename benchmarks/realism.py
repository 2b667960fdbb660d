"""How realistic are the synthetic galaxies? A calibration against a real MaNGA DAP MAPS file.

The one real file at hand (7815-3702, a bright star-forming galaxy in a 37-fibre bundle) is
compared with synthetic 37-fibre galaxies of a realistic and of a smooth world, written in this
process:

(a) the share of valid H-alpha spaxels with S/N above 3, 10, 30 and 100;
(b) the fractional residual power of the H-alpha map after a smooth fit, at the PSF scale
    (a band-pass around 5 spaxels, the 2.5-arcsec PSF FWHM) and at three times it. The smooth fit
    is the median H-alpha in elliptical annuli (centre, position angle and ellipticity from the
    primary header, as the DAP records them), so that clumps and arms are what remains; the
    residual is band-passed as the difference of two Gaussian smoothings (normalised over valid
    spaxels) and its power divided by the map's. The noise's own contribution, estimated from
    IVAR with the survey's spatial correlation, is subtracted from both, so the number means the
    same on bright and faint galaxies.

Since the real galaxy is bright and star forming, it is compared with the brightest third (by
median H-alpha S/N) of the synthetic star-forming 37-fibre galaxies without anomaly or oddity;
the whole synthetic 37-fibre population is printed too. Ratios are synthetic / real; the target
is every compared ratio within a factor of 2 for the realistic world.

    .venv/bin/python benchmarks/realism.py            # writes benchmarks/REALISM.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from manga_assets.dap.datamodel import SPAXEL_ARCSEC
from manga_assets.dap.maps import read_maps
from manga_assets.synthetic.geometry import MapGrid, disk_coordinates
from manga_assets.synthetic.physics import NOISE_CORRELATION_SIGMA, correlated_noise
from manga_assets.synthetic.release import build_release
from manga_assets.synthetic.spec import WORLDS, SyntheticReleaseSpec

REAL_FILE = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/real/manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"
)
SNR_THRESHOLDS = (3, 10, 30, 100)
PSF_FWHM_SPAXELS = 5.0
BAND_SCALES = {"psf": PSF_FWHM_SPAXELS, "3psf": 3 * PSF_FWHM_SPAXELS}
NOISE_REALISATIONS = 8
# Within this factor of the real galaxy's number counts as realistic.
TOLERANCE = 2.0


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    return np.exp(-0.5 * (offsets / sigma) ** 2)


def masked_smooth(image: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that averages valid spaxels only (normalised convolution)."""
    kernel = _gaussian_matrix(image.shape[0], sigma)
    numerator = kernel @ (image * weight) @ kernel.T
    denominator = kernel @ weight @ kernel.T
    return numerator / np.maximum(denominator, 1e-12)


def band_pass(image: np.ndarray, weight: np.ndarray, fwhm: float) -> np.ndarray:
    """Structure at scale ``fwhm`` spaxels: the difference of Gaussians sigma/sqrt2, sigma*sqrt2."""
    sigma = fwhm / 2.3548
    return masked_smooth(image, weight, sigma / np.sqrt(2)) - masked_smooth(
        image, weight, sigma * np.sqrt(2)
    )


def annular_median_model(flux: np.ndarray, valid: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """The smooth fit: median flux in elliptical annuli one spaxel wide, interpolated in radius."""
    ring = np.floor(radius).astype(int)
    centres, medians = [], []
    for index in np.unique(ring[valid]):
        members = valid & (ring == index)
        if members.sum() >= 3:
            centres.append(float(np.mean(radius[members])))
            medians.append(float(np.median(flux[members])))
    return np.interp(radius, centres, medians)


def elliptical_radius(size: int, header: fits.Header) -> np.ndarray:
    """In-plane radius (spaxels) about the map centre, from the DAP's ECOOPA and ECOOELL."""
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    # The sky offsets of synthetic.geometry.map_grid: +x toward +RA (lower column), +y north.
    grid = MapGrid(
        size=size,
        x=-(cols - centre) * SPAXEL_ARCSEC,
        y=(rows - centre) * SPAXEL_ARCSEC,
        footprint=np.ones((size, size), dtype=bool),
    )
    axis_ratio = max(1.0 - float(header.get("ECOOELL", 0.0)), 0.05)
    coords = disk_coordinates(grid, axis_ratio, float(header.get("ECOOPA", 0.0)), (0.0, 0.0))
    return coords.radius / SPAXEL_ARCSEC


def galaxy_metrics(path: Path, seed: int = 0) -> dict[str, float]:
    """S/N shares and noise-corrected residual power of one MAPS file's H-alpha map."""
    maps = read_maps(path, lines=["Ha-6564"])
    flux, ivar = maps.flux[0].astype(np.float64), maps.ivar[0].astype(np.float64)
    valid = ~maps.invalid[0]
    snr = flux[valid] * np.sqrt(ivar[valid])
    row: dict[str, float] = {"median_snr": float(np.median(snr)), "n_valid": int(valid.sum())}
    for threshold in SNR_THRESHOLDS:
        row[f"snr>{threshold}"] = float(np.mean(snr > threshold))
    radius = elliptical_radius(flux.shape[0], fits.getheader(path, 0))
    residual = np.where(valid, flux - annular_median_model(flux, valid, radius), 0.0)
    weight = valid.astype(np.float64)
    sigma = np.where(valid, 1.0 / np.sqrt(np.where(valid, ivar, 1.0)), 0.0)
    noise = sigma * correlated_noise(
        np.random.default_rng(seed), (NOISE_REALISATIONS, *flux.shape), NOISE_CORRELATION_SIGMA
    ).astype(np.float64)
    signal_power = float(np.sum(flux[valid] ** 2) - np.sum(sigma[valid] ** 2))
    for name, fwhm in BAND_SCALES.items():
        power = float(np.sum(band_pass(residual, weight, fwhm)[valid] ** 2))
        noise_power = np.mean(
            [np.sum(band_pass(n * weight, weight, fwhm)[valid] ** 2) for n in noise]
        )
        row[f"resid_{name}"] = (power - float(noise_power)) / max(signal_power, 1e-30)
    return row


def synthetic_metrics(directory: Path, world: str, plates: int, seed: int) -> pd.DataFrame:
    """Write a lean 37-fibre release of ``world`` and measure every galaxy with a MAPS file."""
    spec = SyntheticReleaseSpec(
        n_plates=plates, galaxies_per_plate=14, ifu_mix=((37, 17),), lean=True, seed=seed,
        world=world,
    )  # fmt: skip
    started = time.perf_counter()
    summary = build_release(directory / world, spec)
    elapsed = time.perf_counter() - started
    print(f"{world}: {summary.n_galaxies} galaxies written in {elapsed:.1f} s")
    truth = pd.read_parquet(summary.truth_path).set_index("plateifu")
    rows = []
    for plateifu, path in summary.maps_paths.items():
        if not truth.loc[plateifu, "has_maps"]:
            continue
        row = galaxy_metrics(path)
        row["plateifu"] = plateifu
        rows.append(row)
    metrics = pd.DataFrame(rows).set_index("plateifu")
    columns = ["bpt_class", "anomaly_kind", "oddity"]
    return metrics.join(truth[[c for c in columns if c in truth.columns]])


def bright_star_forming(metrics: pd.DataFrame) -> pd.DataFrame:
    """The brightest third (median H-alpha S/N) of the ordinary star-forming galaxies."""
    ordinary = metrics[(metrics["bpt_class"] == "sf") & (metrics["anomaly_kind"] == "none")]
    if "oddity" in ordinary.columns:
        ordinary = ordinary[ordinary["oddity"] == "none"]
    cut = ordinary["median_snr"].quantile(2 / 3)
    return ordinary[ordinary["median_snr"] >= cut]


COMPARED = [f"snr>{t}" for t in SNR_THRESHOLDS] + [f"resid_{name}" for name in BAND_SCALES]
SHOWN = ["median_snr", *COMPARED]


def summarise(group: pd.DataFrame) -> dict[str, float]:
    """Each number's median over the galaxies of ``group``."""
    return {column: float(group[column].median()) for column in SHOWN}


def _format(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def table(real: dict[str, float], groups: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: each number for the real galaxy and each group, with synthetic / real."""
    header = "| number | real 7815-3702 | " + " | ".join(
        f"{name} | ratio" for name in groups
    ) + " |"  # fmt: skip
    lines = [header, "|" + "---|" * (2 + 2 * len(groups))]
    for column in SHOWN:
        cells = [column, _format(real[column])]
        for values in groups.values():
            ratio = values[column] / real[column] if real[column] else float("nan")
            flag = "" if column not in COMPARED or 1 / TOLERANCE <= ratio <= TOLERANCE else " ✗"
            cells += [_format(values[column]), f"{ratio:.2f}{flag}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("realism"), help="where releases go")
    parser.add_argument("--plates", type=int, default=12, help="plates of 14 galaxies per world")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=Path, default=REAL_FILE)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("REALISM.md"))
    args = parser.parse_args()

    real = galaxy_metrics(args.real)
    bright: dict[str, dict[str, float]] = {}
    population: dict[str, dict[str, float]] = {}
    counts: dict[str, tuple[int, int]] = {}
    for world in WORLDS:
        metrics = synthetic_metrics(args.dir, world, args.plates, args.seed)
        chosen = bright_star_forming(metrics)
        bright[f"{world}: bright SF"] = summarise(chosen)
        population[f"{world}: all"] = summarise(metrics)
        counts[world] = (len(chosen), len(metrics))

    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/realism.py", *sys.argv[1:]])
    realistic_ok = all(
        1 / TOLERANCE <= bright["realistic: bright SF"][c] / real[c] <= TOLERANCE for c in COMPARED
    )
    lines = [
        "# Realism of the synthetic world against a real MaNGA galaxy",
        "",
        f"Produced by `{command}` (one process; releases written under `{args.dir}/`).",
        "",
        "Real: `manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz` (37 fibres, DR15 layout), "
        f"{real['n_valid']} valid H-alpha spaxels. Synthetic: lean DR17 releases of 37-fibre "
        f"bundles, {args.plates} plates per world, seed {args.seed}. 'bright SF' is the brightest "
        "third (median H-alpha S/N) of the star-forming galaxies without anomaly or oddity "
        + "("
        + "; ".join(f"{w}: {n} of {total} galaxies" for w, (n, total) in counts.items())
        + "); 'all' is every synthetic galaxy with a MAPS file. Numbers are medians over "
        "galaxies; ratio = synthetic / real, ✗ where a compared number is off by more than a "
        f"factor of {TOLERANCE:g}.",
        "",
        "- `snr>T`: share of valid H-alpha spaxels (no NOCOV / UNRELIABLE / DONOTUSE, IVAR > 0) "
        "with S/N above T.",
        "- `resid_psf`, `resid_3psf`: power of the H-alpha residual after the smooth fit "
        "(median in elliptical annuli), band-passed at 5 and 15 spaxels FWHM, as a share of "
        "the map's power, the noise's expected share subtracted from both.",
        "",
        "## Bright star-forming galaxies (the comparison)",
        "",
        *table(real, bright),
        "",
        "## Whole synthetic 37-fibre population (for information)",
        "",
        "A survey's median galaxy is far fainter than 7815-3702, so here a ✗ is expected for the "
        "S/N shares; it says how the population differs from one bright galaxy.",
        "",
        *table(real, population),
        "",
        f"Realistic world within a factor of {TOLERANCE:g} on every compared number: "
        f"{'yes' if realistic_ok else 'NO'}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
