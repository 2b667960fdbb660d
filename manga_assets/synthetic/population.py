"""Which galaxies a synthetic release holds, and the physical parameters of each.

A plate's galaxies (how many, their bundles, their BPT classes and planted anomalies) depend only
on ``(seed, plate)``; a galaxy's parameters only on ``(seed, plate, ifudesign)``. Release-wide
special cases (catalogue edge cases, broken files) are handed out in plate-major order from the
first galaxy on, so adding plates at the end never changes the galaxies already there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from manga_assets.dap.datamodel import CRITICAL_BIT, MNGTARG3_AGN_BITS
from manga_assets.sas.paths import PlateIFU
from manga_assets.synthetic.bpt import BptRatios, draw_bpt_ratios
from manga_assets.synthetic.spec import (
    ANOMALY_KINDS,
    BPT_CLASSES,
    CATALOGUE_CASES,
    FAULT_KINDS,
    FOOTPRINT_DIAMETER_ARCSEC,
    HOSTILE_FAULT_KINDS,
    REPEAT_CASE,
    SyntheticReleaseSpec,
)
from manga_assets.synthetic.texture import (
    ODDITY_FRACTION,
    HiiTexture,
    Oddity,
    draw_oddity,
    draw_texture,
)

# Random streams, so that one draw never shifts another.
PLATE_STREAM = 1
GALAXY_STREAM = 2
LINE_NOISE_STREAM = 3
EXTENSION_STREAM = 4
REPEAT_STREAM = 5
# The realistic world's own draws (texture, brightness, oddities), so that the smooth world's
# galaxies stay exactly what they were.
REALISM_STREAM = 6

# Class mix of a plate, drawn by systematic sampling so every plate is close to it. AGN are far
# more common than in MaNGA (a few percent) so that a small release has some of each.
CLASS_FRACTIONS: dict[str, float] = {
    "sf": 0.50,
    "composite": 0.14,
    "seyfert": 0.11,
    "liner": 0.11,
    "lineless": 0.14,
}
ANOMALY_FRACTION = 0.1
# Realistic world: log10 of the factor by which a star-forming galaxy is brighter than the smooth
# world's, drawn from a normal distribution; calibrated against a real bright MaNGA galaxy
# (benchmarks/realism.py) so that about a third of star-forming galaxies are as bright as it.
BRIGHTNESS_LOG_MEAN = 0.2
BRIGHTNESS_LOG_SIGMA = 0.4

# Lines an anomaly may delete or garble: none of the BPT lines or their tied partners, so that
# the galaxy's class stays measurable.
ANOMALY_LINE_CANDIDATES: tuple[str, ...] = (
    "Heta-3836", "NeIII-3869", "Hzet-3890", "Heps-3971", "Hdel-4102", "Hgam-4341", "HeII-4687",
)  # fmt: skip
# Lines a 'misaligned_line' anomaly turns against H-alpha: the brightest lines outside the BPT
# set and the DAP's ties, so that the disagreement stands above the noise.
MISALIGNED_LINE_CANDIDATES: tuple[str, ...] = ("Hdel-4102", "Hgam-4341")

# MANGA_TARGET1 bits (sdssMaskbits.par).
MNGTARG1_PRIMARY = 1 << 10
MNGTARG1_SECONDARY = 1 << 11
MNGTARG1_COLOR_ENHANCED = 1 << 12
# MANGA_DRP3QUAL BADDEPTH: a harmless warning bit some good cubes carry.
DRP3QUAL_BADDEPTH = 1 << 1
# MANGA_DAPQUAL DRPCRIT (bit 28): the DAP marks cubes whose DRP3QUAL is CRITICAL.
DAPQUAL_DRPCRIT = 1 << 28

# Log10 line ratios beyond the BPT set (intrinsic, i.e. before differential reddening), keyed by
# the ratio name used in :mod:`manga_assets.synthetic.physics`, as (low, high) per class.
_NUCLEAR_EXTRAS: dict[str, dict[str, tuple[float, float]]] = {
    "seyfert": {"heii_hb": (-0.75, -0.45), "oii_hb": (0.35, 0.6), "neiii_oiii": (-1.1, -0.9),
                "ni_hb": (-1.3, -1.0), "ariii_hb": (-0.9, -0.7), "siii_hb": (-0.4, -0.2)},
    "liner": {"heii_hb": (-1.6, -1.3), "oii_hb": (0.55, 0.8), "neiii_oiii": (-1.0, -0.8),
              "ni_hb": (-1.0, -0.8), "ariii_hb": (-1.2, -1.0), "siii_hb": (-0.3, -0.1)},
    "composite": {"heii_hb": (-1.8, -1.5), "oii_hb": (0.25, 0.45), "neiii_oiii": (-1.2, -1.0),
                  "ni_hb": (-1.5, -1.2), "ariii_hb": (-1.1, -0.9), "siii_hb": (-0.35, -0.2)},
}  # fmt: skip
_DISK_EXTRAS: dict[str, tuple[float, float]] = {
    "heii_hb": (-2.3, -1.8),
    "neiii_oiii": (-1.3, -1.0),
    "ni_hb": (-1.8, -1.5),
    "ariii_hb": (-1.1, -0.9),
    "siii_hb": (-0.35, -0.15),
}


@dataclass(frozen=True)
class Nucleus:
    """A compact ionised component whose line ratios replace the disk's near it.

    Attributes
    ----------
    ratios : dict of str to float
        log10 ratios at its centre (keys as in :mod:`~manga_assets.synthetic.physics`).
    ha_peak : float
        Halpha surface brightness added at its centre, 1E-17 erg/s/cm^2/spaxel (unreddened).
    offset_arcsec : (float, float)
        Sky offset (x toward +RA, y toward +Dec) from the galaxy centre, arcsec.
    extent_arcsec : float
        Gaussian sigma of the region, arcsec, over which its ratios blend into the disk's.
    sigma_kms : float
        Gas velocity dispersion at its centre, km/s.
    """

    ratios: dict[str, float]
    ha_peak: float
    offset_arcsec: tuple[float, float]
    extent_arcsec: float
    sigma_kms: float


@dataclass(frozen=True)
class Disk:
    """The galaxy's extended ionised gas.

    Attributes
    ----------
    ha_peak : float
        Central Halpha surface brightness (unreddened), 1E-17 erg/s/cm^2/spaxel.
    star_forming : bool
        True: ratios follow the star-forming sequence with a metallicity gradient; False: the
        fixed LINER-like ratios of diffuse gas in a retired galaxy (``fixed_bpt``).
    nii_centre, nii_gradient : float
        log([NII]/Ha) at the centre and its decline, dex per effective radius.
    sf_offset, sii_offset, oi_offset : float
        Distances (dex) below Kauffmann (2003) in [OIII]/Hb and left of Kewley (2001) in [SII]
        and [OI] of the star-forming sequence.
    fixed_bpt : BptRatios or None
        Ratios of non-star-forming diffuse gas.
    extras : dict of str to float
        The other log10 ratios (HeII/Hb, NeIII/OIII, ...), constant over the disk.
    ring_radius_re : float
        0 for an exponential disk; else Halpha sits in a ring at this many effective radii.
    """

    ha_peak: float
    star_forming: bool
    nii_centre: float
    nii_gradient: float
    sf_offset: float
    sii_offset: float
    oi_offset: float
    fixed_bpt: BptRatios | None
    extras: dict[str, float]
    ring_radius_re: float = 0.0


@dataclass(frozen=True)
class GalaxyParams:
    """Everything that determines one synthetic data cube.

    Angles in degrees, sizes in arcsec, surface brightnesses in 1E-17 erg/s/cm^2/spaxel,
    velocities in km/s.
    """

    plateifu: PlateIFU
    mangaid: str
    ifu_size: int
    ra: float
    dec: float
    z: float
    ebvgal: float
    log_mass: float
    inclination: float
    axis_ratio: float
    position_angle: float
    re_arcsec: float
    sersic_n: float
    bpt_class: str
    anomaly_kind: str
    anomaly_line: str
    disk: Disk
    nuclei: tuple[Nucleus, ...]
    ebv_centre: float
    ebv_gradient: float
    ha_noise: float
    continuum_peak: float
    vmax: float
    turnover_arcsec: float
    gas_sigma: float
    stellar_sigma: float
    mngtarg1: int
    mngtarg3: int
    drp3qual: int
    nsa_id: int
    sii_doublet_ratio: float
    catalogue_case: str = "none"
    fault: str = "none"
    world: str = "smooth"
    texture: HiiTexture | None = None
    oddity: Oddity | None = None

    @property
    def oddity_kind(self) -> str:
        """The galaxy's oddity ('none' for most), see :data:`~.texture.ODDITY_KINDS`."""
        return self.oddity.kind if self.oddity is not None else "none"

    @property
    def is_agn(self) -> bool:
        """True for a Seyfert or LINER nucleus."""
        return self.bpt_class in ("seyfert", "liner")

    @property
    def dap_done(self) -> bool:
        """False for the cube the DAP did not analyse (no MAPS file)."""
        return self.catalogue_case != "dap_not_done"

    @property
    def dapqual(self) -> int:
        """MANGA_DAPQUAL of the DAP run."""
        return DAPQUAL_DRPCRIT if self.drp3qual & (1 << CRITICAL_BIT) else 0


def seeded_rng(
    seed: int, plate: int, ifu: int, stream: int, offset: int = 0
) -> np.random.Generator:
    """A generator that depends only on its arguments (``ifu`` 0 for plate-level draws)."""
    return np.random.default_rng([seed, plate, ifu, stream, offset])


def _systematic_choice(rng: np.random.Generator, n: int, fractions: dict[str, float]) -> list[str]:
    """``n`` labels in proportion to ``fractions`` (each count within 1 of n*fraction), shuffled."""
    edges = np.cumsum(list(fractions.values()))
    edges /= edges[-1]
    positions = (np.arange(n) + rng.uniform()) / n
    labels = [list(fractions)[int(np.searchsorted(edges, p, side="right"))] for p in positions]
    return [labels[i] for i in rng.permutation(n)]


def _plate_bundles(spec: SyntheticReleaseSpec) -> list[int]:
    """IFU designs of a plate: fibres * 100 + running number (1901, 1902, 3701, ...)."""
    return [size * 100 + k for size, count in spec.ifu_mix for k in range(1, count + 1)]


@dataclass(frozen=True)
class _PlateDraw:
    ifudesigns: list[int]
    spare_designs: list[int]
    classes: list[str]
    anomalies: list[str]
    centre: tuple[float, float]


def _draw_plate(spec: SyntheticReleaseSpec, plate: int) -> _PlateDraw:
    rng = seeded_rng(spec.seed, plate, 0, PLATE_STREAM)
    bundles = _plate_bundles(spec)
    n = int(np.clip(spec.galaxies_per_plate + rng.integers(-1, 2), 1, len(bundles)))
    n = spec.cubes_on_plate(plate) or n
    order = rng.permutation(len(bundles))
    chosen = sorted(bundles[i] for i in order[:n])
    spare = sorted(bundles[i] for i in order[n:])
    classes = _systematic_choice(rng, n, CLASS_FRACTIONS)
    anomalies = ["none"] * n
    eligible = [i for i, c in enumerate(classes) if c != "lineless"]
    n_anomalies = min(len(eligible), int(np.floor(ANOMALY_FRACTION * n + rng.uniform())))
    for index in rng.permutation(eligible)[:n_anomalies]:
        kind = str(rng.choice(ANOMALY_KINDS))
        anomalies[index] = kind
        if kind == "extreme_oiii":
            # A green-pea-like starburst: star forming by construction.
            classes[index] = "sf"
        elif kind == "misaligned_line":
            # A turned map shows only where an extended disk makes the lines; an AGN's point-like
            # nucleus looks the same turned, so the host is a star-forming disk.
            classes[index] = "sf"
    centre = (float(rng.uniform(0.0, 360.0)), float(np.rad2deg(np.arcsin(rng.uniform(-0.1, 0.9)))))
    return _PlateDraw(chosen, spare, classes, anomalies, centre)


def _uniform_ratios(rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> dict:
    return {key: float(rng.uniform(low, high)) for key, (low, high) in ranges.items()}


def _nucleus(
    rng: np.random.Generator, kind: str, offset: tuple[float, float] = (0.0, 0.0)
) -> Nucleus:
    bpt = draw_bpt_ratios(rng, kind)
    ratios = {
        "nii_ha": bpt.nii_ha,
        "oiii_hb": bpt.oiii_hb,
        "sii_ha": bpt.sii_ha,
        "oi_ha": bpt.oi_ha,
        **_uniform_ratios(rng, _NUCLEAR_EXTRAS[kind]),
    }
    ha_range, extent_range, sigma_range = {
        "seyfert": ((1.1, 1.7), (2.0, 3.5), (200.0, 400.0)),
        "liner": ((0.5, 1.0), (2.0, 4.0), (150.0, 250.0)),
        "composite": ((1.0, 1.4), (1.5, 3.0), (100.0, 180.0)),
    }[kind]
    return Nucleus(
        ratios=ratios,
        ha_peak=float(10 ** rng.uniform(*ha_range)),
        offset_arcsec=offset,
        extent_arcsec=float(rng.uniform(*extent_range)),
        sigma_kms=float(rng.uniform(*sigma_range)),
    )


def _disk(rng: np.random.Generator, bpt_class: str, log_mass: float, anomaly: str) -> Disk:
    ha_log_range = {
        "sf": (1.0, 1.8),
        "composite": (0.5, 1.2),
        "seyfert": (0.2, 1.0),
        "liner": (-0.5, 0.3),
        "lineless": (-1.4, -0.8),
    }[bpt_class]
    extras = _uniform_ratios(rng, _DISK_EXTRAS)
    # Mass-metallicity relation: more massive disks have higher [NII]/Ha at the centre.
    nii_centre = float(np.clip(-0.5 + 0.2 * (log_mass - 10.0) + rng.normal(0, 0.06), -1.0, -0.3))
    disk = Disk(
        ha_peak=float(10 ** rng.uniform(*ha_log_range)),
        star_forming=bpt_class != "lineless",
        nii_centre=nii_centre,
        nii_gradient=float(rng.uniform(0.05, 0.2)),
        sf_offset=float(rng.uniform(0.15, 0.4)),
        sii_offset=float(rng.uniform(0.15, 0.45)),
        oi_offset=float(rng.uniform(0.3, 0.7)),
        fixed_bpt=draw_bpt_ratios(rng, "liner") if bpt_class == "lineless" else None,
        extras=extras,
    )
    if anomaly == "extreme_oiii":
        disk = dataclasses.replace(
            disk,
            ha_peak=disk.ha_peak * 4.0,
            nii_centre=float(rng.uniform(-1.5, -1.25)),
            nii_gradient=0.02,
            sf_offset=float(rng.uniform(0.13, 0.2)),
            extras={**extras, "neiii_oiii": float(rng.uniform(-0.9, -0.75))},
        )
    elif anomaly == "strong_heii":
        disk = dataclasses.replace(
            disk, extras={**extras, "heii_hb": float(rng.uniform(-0.55, -0.3))}
        )
    elif anomaly == "sf_ring":
        disk = dataclasses.replace(disk, ring_radius_re=float(rng.uniform(0.8, 1.3)))
    return disk


def _iau_name(ra: float, dec: float) -> str:
    hours = ra / 15.0
    h, m = int(hours), int((hours % 1) * 60)
    s = ((hours * 60) % 1) * 60
    sign = "+" if dec >= 0 else "-"
    d_abs = abs(dec)
    d, dm = int(d_abs), int((d_abs % 1) * 60)
    ds = ((d_abs * 60) % 1) * 60
    return f"J{h:02d}{m:02d}{s:05.2f}{sign}{d:02d}{dm:02d}{ds:04.1f}"


def iau_name(params: GalaxyParams) -> str:
    """IAU-style name from the galaxy's position ('J153010.73+484124.8')."""
    return _iau_name(params.ra, params.dec)


_LOG_MASS_MEAN = {"sf": 9.9, "composite": 10.5, "seyfert": 10.6, "liner": 10.9, "lineless": 10.9}
_EBV_CENTRE_RANGE = {
    "sf": (0.15, 0.5),
    "composite": (0.2, 0.6),
    "seyfert": (0.2, 0.6),
    "liner": (0.05, 0.3),
    "lineless": (0.0, 0.1),
}
_AGN_TARGET_PROBABILITY = {"seyfert": 0.8, "liner": 0.15, "composite": 0.1}


def _sky_position(
    rng: np.random.Generator, plate_centre: tuple[float, float]
) -> tuple[float, float]:
    """(ra, dec) within the 1.49-degree radius of the plate."""
    radius, angle = 1.45 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    dec = float(np.clip(plate_centre[1] + radius * np.sin(angle), -89.0, 89.0))
    ra = float((plate_centre[0] + radius * np.cos(angle) / np.cos(np.deg2rad(dec))) % 360.0)
    return ra, dec


def _cos_inclination(rng: np.random.Generator, anomaly_kind: str, early_type: bool) -> float:
    if anomaly_kind == "misaligned_line":
        # A line map turned by 90 degrees differs from H-alpha's only if the disk looks
        # elongated: b/a <= 0.57.
        return float(rng.uniform(0.15, 0.55))
    return float(rng.uniform(0.5, 1.0) if early_type else rng.uniform(0.15, 1.0))


def _nuclei(
    rng: np.random.Generator, bpt_class: str, anomaly_kind: str, disk: Disk, ifu_size: int
) -> tuple[Nucleus, ...]:
    """The active nucleus of an AGN-like class, and a merging companion's."""
    nuclei: list[Nucleus] = []
    if bpt_class in ("composite", "seyfert", "liner"):
        nuclei.append(_nucleus(rng, bpt_class))
    if anomaly_kind == "double_nucleus":
        # A merging companion: a second, Seyfert-like nucleus a few arcsec away.
        hex_radius = FOOTPRINT_DIAMETER_ARCSEC[ifu_size] / 2
        separation = float(rng.uniform(0.35, 0.6) * hex_radius)
        theta = float(rng.uniform(0, 2 * np.pi))
        companion = _nucleus(
            rng, "seyfert", (separation * np.cos(theta), separation * np.sin(theta))
        )
        brightest = disk.ha_peak + (nuclei[0].ha_peak if nuclei else 0.0)
        nuclei.append(
            dataclasses.replace(
                companion,
                ha_peak=float(brightest * rng.uniform(0.8, 1.5)),
                extent_arcsec=float(rng.uniform(1.0, 1.6)),
            )
        )
    return tuple(nuclei)


def _anomaly_line(rng: np.random.Generator, anomaly_kind: str) -> str:
    """The line an anomaly of one line affects ('' for other kinds)."""
    if anomaly_kind in ("missing_line", "garbled_line"):
        return str(rng.choice(ANOMALY_LINE_CANDIDATES))
    if anomaly_kind == "misaligned_line":
        return str(rng.choice(MISALIGNED_LINE_CANDIDATES))
    return ""


def _targeting_bits(
    rng: np.random.Generator, bpt_class: str, primary: bool
) -> tuple[int, int, int]:
    """MNGTARG1, MNGTARG3 (AGN programmes, likelier for AGN-like classes) and DRP3QUAL."""
    mngtarg1 = MNGTARG1_PRIMARY if primary else MNGTARG1_SECONDARY
    # Only a Primary galaxy draws here: the stream's later draws depend on it.
    if primary and rng.uniform() < 0.2:
        mngtarg1 |= MNGTARG1_COLOR_ENHANCED
    mngtarg3 = 0
    if rng.uniform() < _AGN_TARGET_PROBABILITY.get(bpt_class, 0.02):
        bits = rng.choice(list(MNGTARG3_AGN_BITS.values()), size=rng.integers(1, 3), replace=False)
        for bit in bits:
            mngtarg3 |= 1 << int(bit)
    drp3qual = DRP3QUAL_BADDEPTH if rng.uniform() < 0.05 else 0
    return mngtarg1, mngtarg3, drp3qual


def draw_galaxy(
    spec: SyntheticReleaseSpec,
    plateifu: PlateIFU,
    bpt_class: str,
    anomaly_kind: str,
    plate_centre: tuple[float, float],
) -> GalaxyParams:
    """Draw one galaxy's parameters from the ``(seed, plate, ifudesign)`` stream.

    Every draw comes from that one stream in a fixed order (the helpers below each draw in turn,
    then the parameters drawn as `GalaxyParams` is filled): moving a draw, or adding one before
    the last, changes every later parameter and so every synthetic release.
    """
    if bpt_class not in BPT_CLASSES:
        raise ValueError(f"unknown BPT class {bpt_class!r}; known: {', '.join(BPT_CLASSES)}")
    rng = seeded_rng(spec.seed, plateifu.plate, plateifu.ifu, GALAXY_STREAM)
    ifu_size = plateifu.ifu_size
    ra, dec = _sky_position(rng, plate_centre)
    early_type = bpt_class in ("liner", "lineless")
    log_mass = float(rng.normal(_LOG_MASS_MEAN[bpt_class], 0.4))
    # The Primary sample reaches 1.5 effective radii, the Secondary 2.5.
    primary = rng.uniform() < 0.67
    reach = 1.5 if primary else 2.5
    re_arcsec = float(FOOTPRINT_DIAMETER_ARCSEC[ifu_size] / 2 / reach * rng.uniform(0.75, 1.25))
    cos_i = _cos_inclination(rng, anomaly_kind, early_type)
    intrinsic_thickness = 0.2
    axis_ratio = float(np.sqrt(intrinsic_thickness**2 + (1 - intrinsic_thickness**2) * cos_i**2))
    z = float(10 ** rng.uniform(np.log10(0.015), np.log10(0.12 if not primary else 0.08)))
    disk = _disk(rng, bpt_class, log_mass, anomaly_kind)
    nuclei = _nuclei(rng, bpt_class, anomaly_kind, disk, ifu_size)
    ebv_centre = float(rng.uniform(*_EBV_CENTRE_RANGE[bpt_class]))
    if anomaly_kind == "extreme_oiii":
        ebv_centre = float(rng.uniform(0.02, 0.1))
    anomaly_line = _anomaly_line(rng, anomaly_kind)
    mngtarg1, mngtarg3, drp3qual = _targeting_bits(rng, bpt_class, primary)

    return GalaxyParams(
        plateifu=plateifu,
        mangaid=f"1-{plateifu.plate}{plateifu.ifu:05d}",
        ifu_size=ifu_size,
        ra=ra,
        dec=dec,
        z=z,
        ebvgal=float(10 ** rng.uniform(-2.0, -0.9)),
        log_mass=log_mass,
        inclination=float(np.rad2deg(np.arccos(cos_i))),
        axis_ratio=axis_ratio,
        position_angle=float(rng.uniform(0.0, 180.0)),
        re_arcsec=re_arcsec,
        sersic_n=float(rng.uniform(3.0, 6.0) if early_type else rng.uniform(0.8, 2.5)),
        bpt_class=bpt_class,
        anomaly_kind=anomaly_kind,
        anomaly_line=anomaly_line,
        disk=disk,
        nuclei=nuclei,
        ebv_centre=ebv_centre,
        ebv_gradient=float(rng.uniform(0.15, 0.4)),
        ha_noise=float(10 ** rng.uniform(-1.2, -0.9)),
        continuum_peak=float(10 ** (-0.2 + 0.35 * (log_mass - 10.0) + rng.uniform(-0.2, 0.2))),
        vmax=float(np.clip(150 + 60 * (log_mass - 10.0) + rng.normal(0, 20), 60, 350)),
        turnover_arcsec=float(rng.uniform(0.2, 0.5) * re_arcsec),
        gas_sigma=float(rng.uniform(20.0, 50.0)),
        stellar_sigma=float(10 ** (2.0 + 0.25 * (log_mass - 10.0) + rng.normal(0, 0.05))),
        mngtarg1=mngtarg1,
        mngtarg3=mngtarg3,
        drp3qual=drp3qual,
        nsa_id=(plateifu.plate % 10000) * 100000 + plateifu.ifu,
        sii_doublet_ratio=float(rng.uniform(1.2, 1.45)),
    )


def _brightened(disk: Disk, nuclei: tuple[Nucleus, ...], factor: float) -> dict[str, object]:
    """The disk and nuclei of a galaxy ``factor`` times brighter (nearer, or richer in gas)."""
    return {
        "disk": dataclasses.replace(disk, ha_peak=disk.ha_peak * factor),
        "nuclei": tuple(dataclasses.replace(n, ha_peak=n.ha_peak * factor) for n in nuclei),
    }


def make_realistic(params: GalaxyParams, rng: np.random.Generator) -> GalaxyParams:
    """The realistic world's version of a smooth-world galaxy (draws only from ``rng``).

    Star-forming disks get HII clumps and DIG and a brightness drawn from a wide distribution (real
    surveys hold faint galaxies and a bright tail with central H-alpha S/N above 100); a few
    per cent of ordinary galaxies get an oddity. Lineless galaxies stay smooth and faint.
    """
    changes: dict[str, object] = {"world": "realistic"}
    if not params.disk.star_forming:
        return dataclasses.replace(params, **changes)
    scale_length = params.re_arcsec / 1.678
    changes["texture"] = draw_texture(rng, scale_length)
    log_brightness = float(
        np.clip(rng.normal(BRIGHTNESS_LOG_MEAN, BRIGHTNESS_LOG_SIGMA), -0.5, 1.5)
    )
    changes.update(_brightened(params.disk, params.nuclei, 10.0**log_brightness))
    odd = rng.uniform() < ODDITY_FRACTION and params.anomaly_kind == "none"
    if odd:
        oddity = draw_oddity(rng, FOOTPRINT_DIAMETER_ARCSEC[params.ifu_size] / 2)
        changes["oddity"] = oddity
        if oddity.kind == "dust_lane":
            # A lane shows across an edge-on disk.
            cos_i = float(rng.uniform(0.03, 0.15))
            changes["inclination"] = float(np.rad2deg(np.arccos(cos_i)))
            changes["axis_ratio"] = float(np.sqrt(0.2**2 + (1 - 0.2**2) * cos_i**2))
    return dataclasses.replace(params, **changes)


def plan_plate(spec: SyntheticReleaseSpec, plate: int) -> tuple[list[GalaxyParams], list[int]]:
    """The galaxies of ``plate`` in IFU-design order, and the plate's unused IFU designs."""
    draw = _draw_plate(spec, plate)
    galaxies = [
        draw_galaxy(spec, PlateIFU(plate, ifu), bpt_class, anomaly, draw.centre)
        for ifu, bpt_class, anomaly in zip(
            draw.ifudesigns, draw.classes, draw.anomalies, strict=True
        )
    ]
    if spec.world == "realistic":
        galaxies = [
            make_realistic(
                g, seeded_rng(spec.seed, g.plateifu.plate, g.plateifu.ifu, REALISM_STREAM)
            )
            for g in galaxies
        ]
    return galaxies, draw.spare_designs


def plan_release(spec: SyntheticReleaseSpec) -> list[GalaxyParams]:
    """Every cube of the release in DRPall order (plate, then IFU design), special cases set.

    The catalogue edge cases go to the first galaxies without an anomaly, then (with
    ``spec.faults``) the broken files to the next ones. The second cube of the repeated target is
    observed in a spare bundle of the second plate (of the first when there is only one, of the
    next plate with a free bundle when the second is full). A release too small for a case (too
    few galaxies, or no free bundle anywhere for the repeat) goes without it.
    """
    plates: list[list[GalaxyParams]] = []
    spares: list[list[int]] = []
    for plate in spec.plates:
        galaxies, spare = plan_plate(spec, plate)
        plates.append(galaxies)
        spares.append(spare)

    cases = list(CATALOGUE_CASES) + (list(FAULT_KINDS) if spec.faults else [])
    cases += list(HOSTILE_FAULT_KINDS) if spec.hostile else []
    # Prefer the second plate for the repeat; a full plate passes it on to the next one.
    preferred = 1 if len(plates) > 1 else 0
    repeat_plates = [i for i in range(preferred, len(plates)) if spares[i]]
    repeat_plates += [i for i in range(preferred) if spares[i]]
    if not repeat_plates:
        # Every bundle of every plate is taken: no room for a second visit.
        cases.remove("repeated_target")
    repeated: GalaxyParams | None = None
    for galaxies in plates:
        for index, galaxy in enumerate(galaxies):
            if not cases:
                break
            if galaxy.anomaly_kind != "none":
                continue
            case = cases.pop(0)
            if case in CATALOGUE_CASES:
                drp3qual = galaxy.drp3qual | (
                    (1 << CRITICAL_BIT) if case == "critical_drp3qual" else 0
                )
                galaxies[index] = dataclasses.replace(
                    galaxy, catalogue_case=case, drp3qual=drp3qual
                )
                if case == "repeated_target":
                    repeated = galaxies[index]
            else:
                galaxies[index] = dataclasses.replace(galaxy, fault=case)

    _plant_repeat_visits(spec, plates)
    if repeated is not None:
        target = repeat_plates[0]
        same_size = [d for d in spares[target] if d // 100 == repeated.ifu_size]
        ifu = (same_size or spares[target])[0]
        repeat = dataclasses.replace(
            repeated,
            plateifu=PlateIFU(spec.plates[target], ifu),
            ifu_size=ifu // 100,
            catalogue_case=REPEAT_CASE,
        )
        plates[target] = sorted(plates[target] + [repeat], key=lambda g: g.plateifu)
    return [galaxy for galaxies in plates for galaxy in galaxies]


def _plant_repeat_visits(spec: SyntheticReleaseSpec, plates: list[list[GalaxyParams]]) -> None:
    """Make ``spec.n_repeats`` cubes second visits of galaxies first observed on an earlier plate.

    A second visit keeps the galaxy's MaNGA-ID and physics and takes the bundle (and so the noise)
    of the cube it replaces; it goes to a galaxy observed with the same bundle size when one is
    left. Cubes with a catalogue case or a fault are left alone.
    """
    if not spec.n_repeats:
        return
    plain = [
        (p, i)
        for p, galaxies in enumerate(plates)
        for i, galaxy in enumerate(galaxies)
        if galaxy.catalogue_case == "none" and galaxy.fault == "none"
    ]
    later = [slot for slot in plain if slot[0] > 0]
    if spec.n_repeats > len(later) // 2:
        raise ValueError(
            f"n_repeats={spec.n_repeats} is too many for {len(plain)} plain cubes; at most "
            f"{len(later) // 2}"
        )
    rng = seeded_rng(spec.seed, 0, 0, REPEAT_STREAM)
    chosen = sorted(later[k] for k in rng.choice(len(later), spec.n_repeats, replace=False))
    taken = set(chosen)
    # First visits, earliest first, per bundle size.
    firsts: dict[int, list[tuple[int, int]]] = {}
    for slot in plain:
        if slot not in taken:
            firsts.setdefault(plates[slot[0]][slot[1]].ifu_size, []).append(slot)
    for plate_index, index in chosen:
        visit = plates[plate_index][index]
        # The same bundle size first, else any size, from a plate before this one.
        pools = [firsts.get(visit.ifu_size, []), *(firsts[size] for size in sorted(firsts))]
        pool = next((slots for slots in pools if slots and slots[0][0] < plate_index), None)
        if pool is None:
            raise ValueError(f"no galaxy left before plate {visit.plateifu.plate} to observe again")
        first_plate, first_index = pool.pop(0)
        first = plates[first_plate][first_index]
        plates[first_plate][first_index] = dataclasses.replace(
            first, catalogue_case="repeated_target"
        )
        plates[plate_index][index] = dataclasses.replace(
            first, plateifu=visit.plateifu, ifu_size=visit.ifu_size, catalogue_case=REPEAT_CASE
        )
