"""What a synthetic release should contain, and what writing one produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manga_assets.sas.releases import RELEASES

# Bundles on a real MaNGA plate: (fibres per bundle, bundles per plate). The 17 science bundles of
# every plate give the DR17 mix of IFU sizes; 7-fibre mini-bundles (standard stars) are left out.
DEFAULT_IFU_MIX: tuple[tuple[int, int], ...] = ((19, 2), (37, 4), (61, 4), (91, 2), (127, 5))

# Map side (pixels of 0.5 arcsec) and hexagonal footprint diameter (arcsec, corner to corner) per
# bundle size. Sizes from the reference examples (19 -> 34, 37 -> 42, 61 -> 54, 127 -> 72; 91 is
# interpolated); diameters are the nominal MaNGA bundle sizes.
MAP_SIZE_PIXELS: dict[int, int] = {19: 34, 37: 42, 61: 54, 91: 64, 127: 72}
FOOTPRINT_DIAMETER_ARCSEC: dict[int, float] = {19: 12.5, 37: 17.5, 61: 22.5, 91: 27.5, 127: 32.5}

# What can be planted, in the order they are handed out over the release's galaxies.
CATALOGUE_CASES: tuple[str, ...] = ("critical_drp3qual", "dap_not_done", "repeated_target")
# The second cube of the repeated target gets this case.
REPEAT_CASE = "repeat_observation"
FAULT_KINDS: tuple[str, ...] = ("truncated_gzip", "missing_file", "no_gflux_hdu", "all_donotuse")
# Files built to hang or exhaust a reader that trusts their headers (synthetic/hostile.py).
HOSTILE_FAULT_KINDS: tuple[str, ...] = ("header_bomb", "no_end_card", "gzip_bomb", "huge_naxis")
ANOMALY_KINDS: tuple[str, ...] = (
    "sf_ring",
    "double_nucleus",
    "extreme_oiii",
    "strong_heii",
    "missing_line",
    "garbled_line",
    "misaligned_line",
)
BPT_CLASSES: tuple[str, ...] = ("sf", "composite", "seyfert", "liner", "lineless")
# What the galaxies look like: 'realistic' disks carry HII-region clumps on spiral arms and in
# patches, diffuse ionised gas with its own line ratios, a bright tail of galaxies and rare odd
# ones (synthetic/texture.py); 'smooth' is the earlier world of smooth exponential disks, rings
# and nuclei, kept bit for bit.
WORLDS: tuple[str, ...] = ("realistic", "smooth")


@dataclass(frozen=True)
class SyntheticReleaseSpec:
    """A synthetic MaNGA release to write.

    Every galaxy is seeded from ``(seed, plate, ifudesign)`` and every plate from
    ``(seed, plate)``, so adding plates leaves the MAPS files of the existing ones byte-identical.

    Attributes
    ----------
    release : str
        'DR17' or 'DR15'; fixes the DRP/DAP versions, DAPTYPEs and file layouts.
    n_plates : int
        Plates to write, numbered ``first_plate``, ``first_plate + 1``, ...
    galaxies_per_plate : int
        Average science cubes per plate; each plate has this number -1, 0 or +1 (at least one, at
        most the bundles of ``ifu_mix``).
    seed : int
        Non-negative base seed.
    lean : bool
        Write only PRIMARY + EMLINE_GFLUX, _IVAR and _MASK in MAPS files (the extensions the
        pipeline reads); the line maps are identical to those of a full file.
    faults : bool
        Plant broken files (:data:`FAULT_KINDS`), recorded in the summary and truth table.
    hostile : bool
        Plant hostile files too (:data:`HOSTILE_FAULT_KINDS`: a header bomb, a header without
        END, a gzip bomb, a huge NAXIS), recorded as faults. Each is small on disk.
    first_plate : int
        Number of the first plate (4-5 digits).
    ifu_mix : tuple of (int, int)
        Bundles on each plate as (fibres, count); the plate's galaxies are drawn from these.
    gzip_level : int
        zlib level of the MAPS ``.fits.gz`` files, 1 (fastest) by default. Decompression cost,
        which is what readers pay, hardly depends on it.
    n_cubes : int, optional
        Exact number of cubes drawn for the plates, spread as evenly as the plates allow
        (replaces the per-plate jitter of ``galaxies_per_plate``); the second visit of the
        repeated target comes on top. Files then depend on ``n_plates`` too: adding plates
        redistributes the cubes.
    n_repeats : int
        Cubes that are second visits of galaxies first observed on an earlier plate (same
        MaNGA-ID and physics, new noise), as DR17 has 11,273 cubes of 10,010 galaxies. The first
        visit is marked 'repeated_target' and the second 'repeat_observation'.
    """

    release: str = "DR17"
    n_plates: int = 4
    galaxies_per_plate: int = 9
    seed: int = 0
    lean: bool = False
    faults: bool = False
    hostile: bool = False
    first_plate: int = 10001
    ifu_mix: tuple[tuple[int, int], ...] = DEFAULT_IFU_MIX
    gzip_level: int = 1
    n_cubes: int | None = None
    n_repeats: int = 0
    world: str = "realistic"

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"unknown world {self.world!r}; known: {', '.join(WORLDS)}")
        if self.release not in RELEASES:
            raise ValueError(
                f"unknown release {self.release!r}; synthetic releases exist for "
                f"{', '.join(RELEASES)}"
            )
        if self.n_plates < 1:
            raise ValueError(f"n_plates must be at least 1, got {self.n_plates}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 1000 <= self.first_plate <= 99999 - (self.n_plates - 1):
            raise ValueError(f"plates must have 4-5 digits, got first_plate={self.first_plate}")
        unknown = [size for size, _ in self.ifu_mix if size not in MAP_SIZE_PIXELS]
        if unknown:
            raise ValueError(
                f"unknown bundle sizes {unknown} in ifu_mix; known: {sorted(MAP_SIZE_PIXELS)}"
            )
        if any(count < 1 or count > 99 for _, count in self.ifu_mix):
            raise ValueError(f"bundle counts in ifu_mix must be 1..99, got {self.ifu_mix}")
        if not 1 <= self.galaxies_per_plate <= self.bundles_per_plate:
            raise ValueError(
                f"galaxies_per_plate must be 1..{self.bundles_per_plate} (the bundles of "
                f"ifu_mix), got {self.galaxies_per_plate}"
            )
        if self.n_cubes is not None and not (
            self.n_plates <= self.n_cubes <= self.n_plates * self.bundles_per_plate
        ):
            raise ValueError(
                f"n_cubes must be {self.n_plates}..{self.n_plates * self.bundles_per_plate} "
                f"(one to {self.bundles_per_plate} cubes on each of {self.n_plates} plates), "
                f"got {self.n_cubes}"
            )
        if self.n_repeats < 0:
            raise ValueError(f"n_repeats must be non-negative, got {self.n_repeats}")
        if not 0 <= self.gzip_level <= 9:
            raise ValueError(f"gzip_level must be 0..9, got {self.gzip_level}")

    @property
    def bundles_per_plate(self) -> int:
        """Science bundles available on each plate."""
        return sum(count for _, count in self.ifu_mix)

    @property
    def plates(self) -> list[int]:
        """The plate numbers of the release."""
        return [self.first_plate + index for index in range(self.n_plates)]

    def cubes_on_plate(self, plate: int) -> int | None:
        """Cubes fixed by ``n_cubes`` for ``plate`` (None: drawn around galaxies_per_plate)."""
        if self.n_cubes is None:
            return None
        base, extra = divmod(self.n_cubes, self.n_plates)
        return base + (1 if plate - self.first_plate < extra else 0)


# DR17 published 11,273 MAPS cubes of 10,010 galaxies: 11,272 drawn plus the repeated target's
# second visit, 1,262 more second visits. A plate carries 17 science bundles, so they need at
# least 664 plates; lean files keep the release to a few GB on disk.
DR17_SURVEY = SyntheticReleaseSpec(
    release="DR17", n_plates=664, n_cubes=11272, n_repeats=1262, lean=True, faults=True
)


@dataclass(frozen=True)
class ReleaseSummary:
    """What :func:`~manga_assets.synthetic.release.build_release` wrote.

    Attributes
    ----------
    root : Path
        Folder that holds the SAS tree (``root/dr17/manga/...``) and ``truth.parquet``.
    release : str
        'DR17' or 'DR15'.
    n_galaxies : int
        Cubes in the DRPall (every catalogue plate-IFU, including the edge cases).
    plates : list of int
        Plate numbers.
    plateifus : list of str
        Every cube's plate-IFU, in DRPall order.
    drpall_path, dapall_path, truth_path : Path
        The catalogues and the truth table (``root/truth.parquet``, outside the SAS tree).
    maps_paths : dict of str to Path
        MAPS file of every cube the DAP analysed (DAPDONE true), whether or not a planted fault
        removed or broke it.
    faults : list of (str, str)
        Planted broken files as (plateifu, kind), kinds from :data:`FAULT_KINDS`.
    catalogue_cases : list of (str, str)
        Catalogue edge cases as (plateifu, kind): 'critical_drp3qual', 'dap_not_done' (no MAPS
        file), 'repeated_target' (first cube of a MaNGA-ID observed twice) and
        'repeat_observation' (its second cube).
    anomalies : list of (str, str)
        Planted anomalies as (plateifu, kind), kinds from :data:`ANOMALY_KINDS`.
    maps_bytes : int
        Bytes of all MAPS files written.
    world : str
        The world the galaxies were drawn from ('realistic' or 'smooth').
    oddities : list of (str, str)
        Odd but normal galaxies of the realistic world as (plateifu, kind).
    """

    root: Path
    release: str
    n_galaxies: int
    plates: list[int]
    plateifus: list[str]
    drpall_path: Path
    dapall_path: Path
    truth_path: Path
    maps_paths: dict[str, Path] = field(default_factory=dict)
    faults: list[tuple[str, str]] = field(default_factory=list)
    catalogue_cases: list[tuple[str, str]] = field(default_factory=list)
    anomalies: list[tuple[str, str]] = field(default_factory=list)
    maps_bytes: int = 0
    world: str = "realistic"
    oddities: list[tuple[str, str]] = field(default_factory=list)
