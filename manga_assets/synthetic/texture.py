"""The realistic world's texture: HII-region clumps, diffuse ionised gas, and rare odd galaxies.

Real MaNGA H-alpha maps are not smooth disks. At the survey's PSF (2.5 arcsec FWHM, about 1.5 kpc
at z ~ 0.03) individual HII regions are unresolved, and what the maps show are PSF-sized clumps of
HII-region complexes along spiral arms and in patches, whose luminosities follow dN/dL ~ L^alpha
with alpha about -2 (Kennicutt, Edgar & Hodge 1989; Santoro et al. 2022: -1.7), so a few bright
complexes dominate a disk. Between them, and in the outskirts, diffuse ionised gas (DIG) dominates,
with higher [NII]/Ha, [SII]/Ha and [OI]/Ha than HII regions (Zhang et al. 2017).

This module draws and renders that texture; :mod:`~manga_assets.synthetic.physics` combines it
with the disk's line ratios. Everything is a few vectorised numpy operations per galaxy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from manga_assets.dap.datamodel import SPAXEL_ARCSEC
from manga_assets.synthetic.geometry import MapGrid

# Gaussian sigma (arcsec) of the 2.5-arcsec FWHM MaNGA PSF: an unresolved clump's image.
PSF_SIGMA_ARCSEC = 2.5 / 2.3548
ODDITY_KINDS: tuple[str, ...] = ("flat_ratios", "foreground_star", "dust_lane")
# Share of ordinary galaxies (no planted anomaly) that are odd in the realistic world: rare, but
# present in every release of a few hundred galaxies, as in a real survey.
ODDITY_FRACTION = 0.04


@dataclass(frozen=True)
class HiiTexture:
    """How a star-forming disk's H-alpha is split into HII clumps, smooth HII and DIG.

    Attributes
    ----------
    seed : int
        Seeds the clump positions and luminosities (drawn when the maps are made).
    n_clumps : int
        HII-region complexes in the disk.
    alpha : float
        Slope of the luminosity function dN/dL ~ L^alpha.
    log_dynamic_range : float
        log10(L_max / L_min) of the complexes.
    clump_share : float
        Share of the HII regions' H-alpha in resolved-out complexes (the rest is a smooth floor of
        faint HII regions following the disk profile).
    dig_share : float
        DIG share of the H-alpha at the centre; the DIG is more extended than the HII regions, so
        its share grows outward.
    dig_scale : float
        DIG scale length in units of the HII disk's.
    n_arms, pitch_deg, arm_phase, arm_share, arm_jitter : int, float, float, float, float
        Logarithmic spiral arms: their number, pitch angle, azimuth at the reference radius, the
        share of complexes on them and the azimuthal scatter (radians) about them; the other
        complexes sit in patches.
    arm_contrast : float
        Amplitude of the arms in the smooth HII floor (a density wave: 1 + contrast * cos).
    lopsidedness, lopsided_phase : float
        Amplitude and azimuth of the m=1 asymmetry most disks show, applied to the HII regions.
    patch_arcsec : float
        Size (Gaussian sigma, in-plane arcsec) of a patch of complexes.
    dig_offsets : dict of str to float
        log10 ratio offsets of the DIG over the HII regions (keys as in the physics module).
    """

    seed: int
    n_clumps: int
    alpha: float
    log_dynamic_range: float
    clump_share: float
    dig_share: float
    dig_scale: float
    n_arms: int
    pitch_deg: float
    arm_phase: float
    arm_share: float
    arm_jitter: float
    arm_contrast: float
    lopsidedness: float
    lopsided_phase: float
    patch_arcsec: float
    dig_offsets: dict[str, float]


@dataclass(frozen=True)
class Oddity:
    """A rare oddity of a normal galaxy (its truth label stays NORMAL).

    Attributes
    ----------
    kind : str
        One of :data:`ODDITY_KINDS`.
    centre_arcsec : (float, float)
        Sky offset of the star (foreground_star) or the lane's offset across the major axis
        (dust_lane, first value), arcsec.
    size_arcsec : float
        Radius of the masked star, or the Gaussian half-width of the lane, arcsec.
    strength : float
        Lane E(B-V) at its core (mag), or the brightness factor of a flat-ratio galaxy.
    """

    kind: str
    centre_arcsec: tuple[float, float]
    size_arcsec: float
    strength: float


def draw_texture(rng: np.random.Generator, scale_length_arcsec: float) -> HiiTexture:
    """Draw the HII/DIG texture of a star-forming disk with the given scale length."""
    # About one complex per square arcsec of the inner disk (a few per PSF beam).
    n_clumps = int(np.clip(rng.uniform(2.0, 4.0) * 2 * np.pi * scale_length_arcsec**2, 12, 800))
    return HiiTexture(
        seed=int(rng.integers(2**62)),
        n_clumps=n_clumps,
        alpha=float(rng.uniform(-2.0, -1.7)),
        log_dynamic_range=float(rng.uniform(2.0, 3.0)),
        clump_share=float(rng.uniform(0.1, 0.22)),
        dig_share=float(rng.uniform(0.05, 0.12)),
        dig_scale=float(rng.uniform(2.0, 3.0)),
        n_arms=int(rng.choice([2, 2, 2, 3, 4])),
        pitch_deg=float(rng.uniform(12.0, 30.0)),
        arm_phase=float(rng.uniform(0, 2 * np.pi)),
        arm_share=float(rng.uniform(0.4, 0.8)),
        arm_jitter=float(rng.uniform(0.15, 0.35)),
        arm_contrast=float(rng.uniform(0.1, 0.4)),
        lopsidedness=float(rng.uniform(0.1, 0.5)),
        lopsided_phase=float(rng.uniform(0, 2 * np.pi)),
        patch_arcsec=float(rng.uniform(1.2, 2.5)),
        dig_offsets={
            "nii_ha": float(rng.uniform(0.15, 0.3)),
            "sii_ha": float(rng.uniform(0.25, 0.4)),
            "oi_ha": float(rng.uniform(0.35, 0.55)),
            "oiii_hb": float(rng.uniform(0.0, 0.15)),
            "oii_hb": float(rng.uniform(0.1, 0.25)),
        },
    )


def draw_oddity(rng: np.random.Generator, footprint_radius_arcsec: float) -> Oddity:
    """Draw one oddity: its kind and where it sits in the bundle."""
    kind = str(rng.choice(ODDITY_KINDS))
    if kind == "foreground_star":
        radius = float(rng.uniform(0.25, 0.6) * footprint_radius_arcsec)
        angle = float(rng.uniform(0, 2 * np.pi))
        return Oddity(
            kind,
            (radius * np.cos(angle), radius * np.sin(angle)),
            float(rng.uniform(1.2, 2.2)),
            0.0,
        )
    if kind == "dust_lane":
        # Edge-on lanes sit a little off the major axis, on the near side.
        return Oddity(
            kind, (float(rng.uniform(-0.8, 0.8)), 0.0), float(rng.uniform(0.7, 1.3)),
            float(rng.uniform(1.0, 2.0)),
        )  # fmt: skip
    return Oddity(kind, (0.0, 0.0), 0.0, float(rng.uniform(2.0, 4.0)))


def _sample_radii(
    rng: np.random.Generator, profile: Callable[[np.ndarray], np.ndarray], r_max: float, n: int
) -> np.ndarray:
    """In-plane radii whose surface density follows ``profile`` (pdf ~ r * profile(r))."""
    radius = np.linspace(0.0, r_max, 2048)
    cdf = np.cumsum(radius * profile(radius))
    return np.interp(rng.uniform(0.0, cdf[-1], n), cdf, radius)


def profile_total(profile: Callable[[np.ndarray], np.ndarray], r_max: float, axis_ratio: float):
    """Sum over spaxels of an inclined disk with in-plane surface brightness ``profile``."""
    radius = np.linspace(0.0, r_max, 4096)
    area = 2 * np.pi * np.trapezoid(radius * profile(radius), radius) * axis_ratio
    return float(area / SPAXEL_ARCSEC**2)


def clump_positions(
    texture: HiiTexture,
    rng: np.random.Generator,
    profile: Callable[[np.ndarray], np.ndarray],
    r_max: float,
) -> tuple[np.ndarray, np.ndarray]:
    """In-plane (x, y) of the complexes, arcsec: on logarithmic spirals and in patches.

    Radii follow the disk profile, so the complexes follow it on average; arms set the azimuth.
    """
    n = texture.n_clumps
    radius = _sample_radii(rng, profile, r_max, n)
    on_arm = rng.uniform(size=n) < texture.arm_share
    arm = rng.integers(texture.n_arms, size=n)
    arm_azimuth = spiral_azimuth(texture, radius, r_max / 6) + 2 * np.pi * arm / texture.n_arms
    arm_azimuth += rng.normal(0.0, texture.arm_jitter, n)
    # Patches: complexes gather around a few star-forming regions placed like the complexes.
    n_patches = max(2, n // 20)
    patch_radius = _sample_radii(rng, profile, r_max, n_patches)
    patch_azimuth = rng.uniform(0, 2 * np.pi, n_patches)
    which = rng.integers(n_patches, size=n)
    patch_x = patch_radius[which] * np.cos(patch_azimuth[which])
    patch_y = patch_radius[which] * np.sin(patch_azimuth[which])
    scatter = rng.normal(0.0, texture.patch_arcsec, (2, n))
    x = np.where(on_arm, radius * np.cos(arm_azimuth), patch_x + scatter[0])
    y = np.where(on_arm, radius * np.sin(arm_azimuth), patch_y + scatter[1])
    return x, y


def spiral_azimuth(texture: HiiTexture, radius: np.ndarray, reference: float) -> np.ndarray:
    """Azimuth (radians, in-plane) of the first logarithmic spiral arm at ``radius``."""
    winding = np.log(np.maximum(radius, 0.3) / max(reference, 0.3))
    return texture.arm_phase + winding / np.tan(np.deg2rad(texture.pitch_deg))


def disk_modulation(
    texture: HiiTexture, radius: np.ndarray, azimuth: np.ndarray, reference: float
) -> np.ndarray:
    """Relative HII surface density at in-plane (radius, azimuth): arms and lopsidedness.

    Both terms average to zero over azimuth, so the disk keeps its radial profile on average.
    """
    arms = np.cos(texture.n_arms * (azimuth - spiral_azimuth(texture, radius, reference)))
    lopsided = np.cos(azimuth - texture.lopsided_phase)
    return np.maximum(1.0 + texture.arm_contrast * arms + texture.lopsidedness * lopsided, 0.0)


def clump_luminosities(texture: HiiTexture, rng: np.random.Generator, total: float) -> np.ndarray:
    """Luminosities from dN/dL ~ L^alpha between L_min and 10^range L_min, summing to ``total``."""
    power = texture.alpha + 1.0
    low, high = 1.0, 10.0**texture.log_dynamic_range
    u = rng.uniform(size=texture.n_clumps)
    luminosity = (low**power + u * (high**power - low**power)) ** (1.0 / power)
    return total * luminosity / luminosity.sum()


def render_clumps(
    grid: MapGrid,
    x_plane: np.ndarray,
    y_plane: np.ndarray,
    luminosity: np.ndarray,
    axis_ratio: float,
    position_angle_deg: float,
) -> np.ndarray:
    """The PSF-convolved image (flux per spaxel) of point-like complexes in an inclined disk."""
    pa = np.deg2rad(position_angle_deg)
    along, across = x_plane, y_plane * axis_ratio
    # Inverse of the rotation in geometry.disk_coordinates.
    sky_x = along * np.sin(pa) - across * np.cos(pa)
    sky_y = along * np.cos(pa) + across * np.sin(pa)
    variance = PSF_SIGMA_ARCSEC**2
    norm = luminosity * SPAXEL_ARCSEC**2 / (2 * np.pi * variance)
    # Separable Gaussians, summed over complexes in a fixed order (same bytes on every machine).
    gx = np.exp(-((grid.x[0][None, :] - sky_x[:, None]) ** 2) / (2 * variance))
    gy = np.exp(-((grid.y[:, 0][None, :] - sky_y[:, None]) ** 2) / (2 * variance))
    return np.sum((norm[:, None] * gy)[:, :, None] * gx[:, None, :], axis=0)


def dust_lane_ebv(oddity: Oddity, across_sky: np.ndarray) -> np.ndarray:
    """Extra E(B-V) of an edge-on dust lane: a Gaussian band parallel to the major axis."""
    distance = across_sky - oddity.centre_arcsec[0]
    return oddity.strength * np.exp(-0.5 * (distance / oddity.size_arcsec) ** 2)


def foreground_star(oddity: Oddity, grid: MapGrid) -> np.ndarray:
    """True on the round region a foreground star covers (masked in every line)."""
    dx = grid.x - oddity.centre_arcsec[0]
    dy = grid.y - oddity.centre_arcsec[1]
    return np.hypot(dx, dy) <= oddity.size_arcsec
