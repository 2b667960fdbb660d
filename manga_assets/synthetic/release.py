"""Writing a whole synthetic MaNGA release: MAPS files, DRPall, DAPall and the truth table.

Galaxies are written one at a time and dropped, so memory stays bounded by one galaxy whatever
the size of the release; only catalogue rows are kept until the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from manga_assets.dap.datamodel import EMLINE_CHANNELS, FLUX_EXTENSION
from manga_assets.sas.paths import PlateIFU, dapall_location, drpall_location, maps_location
from manga_assets.sas.releases import Release, get_release
from manga_assets.synthetic.broken_files import (
    TRUNCATE_INTO_FLUX,
    fault_recipe,
    plant_hostile,
    truncate_file,
)
from manga_assets.synthetic.catalogues import dap_measurements, write_dapall, write_drpall
from manga_assets.synthetic.extensions import MapsContent
from manga_assets.synthetic.fitsfile import maps_blocks, write_gzipped
from manga_assets.synthetic.physics import model_galaxy, observe_lines
from manga_assets.synthetic.population import (
    EXTENSION_STREAM,
    LINE_NOISE_STREAM,
    GalaxyParams,
    plan_release,
    seeded_rng,
)
from manga_assets.synthetic.spec import ReleaseSummary, SyntheticReleaseSpec
from manga_assets.synthetic.truth import TRUTH_FILENAME, truth_row, write_truth

__all__ = ["ReleaseSummary", "SyntheticReleaseSpec", "build_release", "rewrite_galaxy"]

ProgressCallback = Callable[[int, int], None]


def maps_path(root: Path, release: Release, plateifu: PlateIFU) -> Path:
    """Where the MAPS file of ``plateifu`` (default DAPTYPE) lives under ``root``."""
    return root / maps_location(release, plateifu)


@dataclass(frozen=True)
class _WrittenGalaxy:
    measurements: dict[str, object] | None
    path: Path | None
    bytes_written: int
    healthy: bool
    centre_ratios: dict[str, float] | None = None


def _write_galaxy(
    root: Path,
    spec: SyntheticReleaseSpec,
    release: Release,
    params: GalaxyParams,
    seed_offset: int = 0,
    plant_fault: bool = True,
) -> _WrittenGalaxy:
    """Model, observe and write one galaxy's MAPS file (unless the DAP did not run)."""
    if not params.dap_done:
        return _WrittenGalaxy(None, None, 0, False)
    plate, ifu = params.plateifu.plate, params.plateifu.ifu
    channels = EMLINE_CHANNELS[release.dapver]
    model = model_galaxy(params)
    lines = observe_lines(
        params,
        model,
        channels,
        release.dapver,
        seeded_rng(spec.seed, plate, ifu, LINE_NOISE_STREAM, seed_offset),
    )
    content = MapsContent(
        params, model, lines, seeded_rng(spec.seed, plate, ifu, EXTENSION_STREAM, seed_offset)
    )
    path = maps_path(root, release, params.plateifu)
    recipe = fault_recipe(params.fault if plant_fault else "none")
    size = 0
    if recipe.write:
        pieces = maps_blocks(
            params,
            release,
            release.daptype,
            content,
            lean=spec.lean,
            drop=recipe.drop,
            all_donotuse=recipe.all_donotuse,
        )
        # Where each extension starts and ends in the uncompressed file, for truncation.
        extents: dict[str, list[int]] = {}

        def tracked() -> Iterator[bytes]:
            position = 0
            for name, piece in pieces:
                extents.setdefault(name, [position, position])
                position += len(piece)
                extents[name][1] = position
                yield piece

        size = write_gzipped(path, tracked(), spec.gzip_level)
        if recipe.truncate:
            start, end = extents[FLUX_EXTENSION]
            size = truncate_file(path, int(start + TRUNCATE_INTO_FLUX * (end - start)))
        if recipe.hostile:
            size = plant_hostile(path, recipe.hostile)
    else:
        path.unlink(missing_ok=True)
    return _WrittenGalaxy(
        measurements=dap_measurements(params, model, lines),
        path=path,
        bytes_written=size,
        healthy=recipe == fault_recipe("none"),
        centre_ratios=model.centre_ratios,
    )


def build_release(
    root: Path | str,
    spec: SyntheticReleaseSpec,
    progress: ProgressCallback | None = None,
) -> ReleaseSummary:
    """Write a synthetic MaNGA release under ``root`` in the real SAS layout.

    Parameters
    ----------
    root : Path or str
        Folder standing for the SAS root: files go to ``root/<SAS location>`` (e.g.
        ``root/dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/10001/1901/
        manga-10001-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz``); the truth table goes to
        ``root/truth.parquet``, outside the SAS tree.
    spec : SyntheticReleaseSpec
        What to write.
    progress : callable, optional
        Called as ``progress(done, total)`` after each galaxy.

    Returns
    -------
    ReleaseSummary
        Paths, plate-IFUs and every planted case.

    Notes
    -----
    The same spec gives byte-identical files. A galaxy's MAPS file depends only on the seed, its
    plate and IFU design, ``lean`` and ``gzip_level``, so a spec with more plates leaves the
    files of the first plates untouched (only the catalogues and the truth table change).
    """
    root = Path(root)
    release = get_release(spec.release)
    galaxies = plan_release(spec)
    n_lines = len(EMLINE_CHANNELS[release.dapver])
    measurements: list[dict[str, object] | None] = []
    truth_rows: list[dict[str, object]] = []
    maps_paths: dict[str, Path] = {}
    maps_bytes = 0
    for done, params in enumerate(galaxies, start=1):
        written = _write_galaxy(root, spec, release, params)
        measurements.append(written.measurements)
        truth_rows.append(truth_row(params, written.healthy, written.centre_ratios))
        if written.path is not None:
            maps_paths[str(params.plateifu)] = written.path
        maps_bytes += written.bytes_written
        if progress is not None:
            progress(done, len(galaxies))

    drpall_path = root / drpall_location(release)
    dapall_path = root / dapall_location(release)
    truth_path = root / TRUTH_FILENAME
    write_drpall(drpall_path, galaxies, release)
    write_dapall(dapall_path, galaxies, measurements, release, n_lines)
    write_truth(truth_path, truth_rows)
    return ReleaseSummary(
        root=root,
        release=release.name,
        n_galaxies=len(galaxies),
        plates=spec.plates,
        plateifus=[str(g.plateifu) for g in galaxies],
        drpall_path=drpall_path,
        dapall_path=dapall_path,
        truth_path=truth_path,
        maps_paths=maps_paths,
        faults=[(str(g.plateifu), g.fault) for g in galaxies if g.fault != "none"],
        catalogue_cases=[
            (str(g.plateifu), g.catalogue_case) for g in galaxies if g.catalogue_case != "none"
        ],
        anomalies=[(str(g.plateifu), g.anomaly_kind) for g in galaxies if g.anomaly_kind != "none"],
        maps_bytes=maps_bytes,
        world=spec.world,
        oddities=[(str(g.plateifu), g.oddity_kind) for g in galaxies if g.oddity is not None],
    )


def rewrite_galaxy(
    root: Path | str,
    spec: SyntheticReleaseSpec,
    plateifu: str | PlateIFU,
    seed_offset: int = 1,
) -> Path:
    """Rewrite one galaxy's MAPS file with new noise, as if the server had reprocessed it.

    The galaxy keeps its physical parameters (class, anomaly, geometry); its noise realisation
    (``seed_offset`` != 0) and so its bytes change. A planted fault is not re-planted: the
    rewritten file is healthy. Catalogues and the truth table are left as they are.

    Parameters
    ----------
    root : Path or str
        Root of a release written by :func:`build_release` with ``spec``.
    spec : SyntheticReleaseSpec
        The release's spec.
    plateifu : str or PlateIFU
        The galaxy.
    seed_offset : int, optional
        Selects the new noise realisation; 0 reproduces the original file (without its fault).

    Returns
    -------
    Path
        The rewritten file.

    Raises
    ------
    ValueError
        If the galaxy is not in the release or the DAP did not analyse it.
    """
    target = plateifu if isinstance(plateifu, PlateIFU) else PlateIFU.parse(plateifu)
    release = get_release(spec.release)
    matches = [g for g in plan_release(spec) if g.plateifu == target]
    if not matches:
        raise ValueError(f"{target} is not a cube of this synthetic {spec.release} release")
    params = matches[0]
    if not params.dap_done:
        raise ValueError(f"{target} has DAPDONE false in this release and so no MAPS file")
    written = _write_galaxy(
        Path(root), spec, release, params, seed_offset=seed_offset, plant_fault=False
    )
    assert written.path is not None
    return written.path
