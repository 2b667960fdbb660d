"""Tiny synthetic line-map cubes for the model tests and benchmarks (numpy only).

Each galaxy is an inclined exponential disk; its 19 lines follow one of four line-ratio classes
(star-forming, composite, Seyfert, LINER), and the Seyfert and LINER classes add a compact nucleus.
Pixels outside a circular field of view are invalid in every line, as are a few random pixels.
Cubes are written like the line_cubes asset does: ``cubes/{plate}/{plateifu}.npz`` with ``flux``,
``ivar``, ``mask`` and ``lines``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from manga_assets.dap.datamodel import PROJECT_LINES

# Flux relative to H-alpha, in PROJECT_LINES order.
# Heta NeIII Hzet NeIII Heps Hdel Hgam HeII Hb OIII OIII HeI OI OI NII Ha NII SII SII
LINE_RATIO_CLASSES: dict[str, tuple[float, ...]] = {
    "sf": (0.02, 0.03, 0.03, 0.01, 0.02, 0.09, 0.16, 0.00, 0.35, 0.10, 0.30, 0.04,
           0.03, 0.01, 0.10, 1.00, 0.30, 0.20, 0.15),
    "composite": (0.02, 0.08, 0.03, 0.02, 0.02, 0.09, 0.16, 0.02, 0.35, 0.25, 0.75, 0.04,
                  0.08, 0.03, 0.20, 1.00, 0.60, 0.30, 0.25),
    "seyfert": (0.02, 0.40, 0.03, 0.12, 0.02, 0.09, 0.16, 0.10, 0.35, 1.20, 3.50, 0.04,
                0.15, 0.05, 0.27, 1.00, 0.80, 0.40, 0.35),
    "liner": (0.01, 0.15, 0.02, 0.05, 0.01, 0.08, 0.15, 0.01, 0.30, 0.20, 0.60, 0.03,
              0.30, 0.10, 0.40, 1.00, 1.20, 0.60, 0.50),
}  # fmt: skip
CLASS_NAMES = tuple(LINE_RATIO_CLASSES)


def make_cube(
    rng: np.random.Generator,
    grid: int = 32,
    line_class: str | None = None,
    noise: float = 0.01,
    bad_pixel_fraction: float = 0.01,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic cube: flux (19, g, g) float32, ivar float32, mask bool (True = invalid)."""
    line_class = line_class or CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
    ratios = np.asarray(LINE_RATIO_CLASSES[line_class])[:, None, None]
    amplitude = 10 ** rng.uniform(0.0, 2.0)  # brightness varies; the normalisation removes it
    coordinates = np.arange(grid) - (grid - 1) / 2
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    y = y - rng.uniform(-1.0, 1.0)
    x = x - rng.uniform(-1.0, 1.0)
    angle = rng.uniform(0.0, np.pi)
    axis_ratio = rng.uniform(0.3, 1.0)  # cos(inclination), with a thick-disk floor
    major = x * np.cos(angle) + y * np.sin(angle)
    minor = (-x * np.sin(angle) + y * np.cos(angle)) / axis_ratio
    radius = np.hypot(major, minor)
    disk = np.exp(-radius / (rng.uniform(0.06, 0.16) * grid))
    if line_class in ("seyfert", "liner"):
        # An unresolved nucleus with the AGN ratios, on a star-forming disk.
        nucleus = rng.uniform(0.5, 1.5) * np.exp(-0.5 * (np.hypot(x, y) / 1.2) ** 2)
        sf_ratios = np.asarray(LINE_RATIO_CLASSES["sf"])[:, None, None]
        clean = amplitude * (sf_ratios * disk + ratios * nucleus)
    else:
        clean = amplitude * ratios * disk
    sigma = noise * amplitude
    flux = clean + rng.normal(0.0, sigma, clean.shape)
    ivar = np.full(clean.shape, 1.0 / sigma**2)
    field_radius = rng.uniform(0.35, 0.5) * grid
    outside = np.hypot(x, y) > field_radius
    mask = np.broadcast_to(outside, clean.shape).copy()
    mask |= rng.random(clean.shape) < bad_pixel_fraction
    flux[mask] = 0.0
    ivar[mask] = 0.0
    return flux.astype(np.float32), ivar.astype(np.float32), mask


def write_cube(
    root: Path,
    plateifu: str,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    lines: tuple[str, ...] = PROJECT_LINES,
) -> Path:
    """Write ``root/cubes/{plate}/{plateifu}.npz`` and return its path."""
    plate = plateifu.split("-")[0]
    path = Path(root) / "cubes" / plate / f"{plateifu}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, flux=flux, ivar=ivar, mask=mask, lines=np.array(lines))
    return path


def write_cubes(
    root: Path,
    n: int,
    *,
    grid: int = 32,
    seed: int = 0,
    first_ifu: int = 0,
    noise: float = 0.01,
) -> list[tuple[str, Path]]:
    """Write ``n`` synthetic cubes (17 per plate, like MaNGA) and return (plateifu, path) pairs."""
    rng = np.random.default_rng(seed)
    cubes = []
    for number in range(first_ifu, first_ifu + n):
        plateifu = f"{8000 + number // 17}-{1901 + number % 17}"
        flux, ivar, mask = make_cube(rng, grid, noise=noise)
        cubes.append((plateifu, write_cube(root, plateifu, flux, ivar, mask)))
    return cubes
