"""Acquisition: the catalogue, the MAPS files of each plate, and the line-map cubes."""

import hashlib

import dagster as dg
import pandas as pd

from manga_assets.cubes.extract import EXTRACTION_VERSION, ExtractionSettings
from manga_assets.cubes.plate import extract_plate
from manga_assets.defs.constants import (
    ACQUISITION,
    CATALOG_CODE_VERSION,
    DOWNLOAD_POOL,
    MAPS_FILES_CODE_VERSION,
    MAX_FAILED_SHARE,
    OWNER,
    PLATES_PER_RUN,
)
from manga_assets.defs.data_versions import output_with_plate_versions
from manga_assets.defs.io_managers import PRODUCT_PATH
from manga_assets.defs.markdown import markdown_table
from manga_assets.defs.partitions import plate_partitions
from manga_assets.defs.resources import DataDirResource, SasResource
from manga_assets.provenance import cubes_provenance
from manga_assets.sas.manifest import build_manifest, manifests_by_plate, maps_digest
from manga_assets.sas.network import redact_url
from manga_assets.sas.paths import PlateIFU, dapall_location, drpall_location, maps_location
from manga_assets.sas.transfer import DownloadResult

DOWNLOAD_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _fail_if_unreachable(results: list[DownloadResult], sas: SasResource) -> None:
    errors = [result for result in results if result.status == "error"]
    if errors:
        listed = "; ".join(f"{redact_url(r.url)}: {r.reason}" for r in errors[:5])
        raise dg.Failure(
            description=(
                f"{len(errors)} download(s) failed after retries ({listed}). "
                f"Check that MANGA_SAS_URL={redact_url(sas.sas_url)} is reachable and serves "
                f"release {sas.release}; the run can be retried safely (finished files are kept)."
            )
        )


class CatalogConfig(dg.Config):
    """Which part of the release to work on (default: every selected cube)."""

    plates: list[int] = []
    max_galaxies: int = 0



def _unusable_plates(tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Plates whose table has no 'ok' row, with the first reasons why."""
    return {
        plate: "; ".join(table["reason"].head(3)) or "no galaxy in the catalogue"
        for plate, table in tables.items()
        if not (table["status"] == "ok").any()
    }

@dg.asset(
    group_name=ACQUISITION,
    code_version=CATALOG_CODE_VERSION,
    owners=[OWNER],
    kinds={"parquet"},
    metadata={PRODUCT_PATH: "catalog.parquet"},
    io_manager_key="products_io_manager",
    retry_policy=DOWNLOAD_RETRY,
)
def catalog(
    context: dg.AssetExecutionContext,
    config: CatalogConfig,
    sas: SasResource,
    data_dir: DataDirResource,
) -> dg.Output[pd.DataFrame]:
    """DRPall + DAPall of the configured release: one row per selected data cube."""
    from manga_assets.dap.catalog import read_dapall, read_drpall, select_cubes

    release = sas.release_info()
    layout = data_dir.layout
    locations = [drpall_location(release), dapall_location(release)]
    with sas.downloader() as downloader:
        results = downloader.fetch_many(
            [(sas.url(location), layout.mirror / location) for location in locations]
        )
    _fail_if_unreachable(results, sas)
    for result in results:
        if result.status != "ok":
            raise dg.Failure(
                description=f"catalogue {redact_url(result.url)} could not be fetched "
                f"({result.status}): {result.reason}. Check MANGA_SAS_URL and "
                f"MANGA_RELEASE={release.name}."
            )
    drpall = read_drpall(results[0].dest)
    dapall = read_dapall(results[1].dest, release.daptype)
    selection = select_cubes(drpall, dapall)
    selected = selection.selected
    if config.plates:
        selected = selected[selected["plate"].isin(config.plates)]
    if config.max_galaxies:
        selected = selected.head(config.max_galaxies)
    selected = selected.reset_index(drop=True)

    return dg.Output(
        selected,
        data_version=dg.DataVersion(
            _digest(
                results[0].sha256,
                results[1].sha256,
                release.daptype,
                config.plates,
                config.max_galaxies,
            )
        ),  # fmt: skip
        metadata={
            "release": release.name,
            "daptype": release.daptype,
            "drpver": release.drpver,
            "dapver": release.dapver,
            "galaxies": len(selected),
            "plates": int(selected["plate"].nunique()),
            "rejected": len(selection.rejected),
            "rejected_by_reason": dg.MetadataValue.json(selection.rejected_by_code()),
            "drpall_sha256": results[0].sha256 or "",
            "dapall_sha256": results[1].sha256 or "",
        },
    )


@dg.asset_check(asset=catalog, blocking=True)
def catalog_schema(catalog: pd.DataFrame) -> dg.AssetCheckResult:
    """The catalogue has every contract column, unique plate-IFUs, and at least one galaxy."""
    from manga_assets.dap.catalog import CATALOG_COLUMNS

    missing = [column for column in CATALOG_COLUMNS if column not in catalog.columns]
    duplicated = int(catalog["plateifu"].duplicated().sum()) if "plateifu" in catalog else -1
    return dg.AssetCheckResult(
        passed=not missing and duplicated == 0 and len(catalog) > 0,
        metadata={
            "missing_columns": ", ".join(missing) or "none",
            "duplicated_plateifus": duplicated,
            "rows": len(catalog),
        },
    )


@dg.asset(
    group_name=ACQUISITION,
    code_version=MAPS_FILES_CODE_VERSION,
    owners=[OWNER],
    kinds={"parquet"},
    partitions_def=plate_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(PLATES_PER_RUN),
    pool=DOWNLOAD_POOL,
    retry_policy=DOWNLOAD_RETRY,
    metadata={PRODUCT_PATH: "manifest/{partition}.parquet"},
    io_manager_key="products_io_manager",
    check_specs=[
        dg.AssetCheckSpec("failed_share", asset="maps_files"),
        dg.AssetCheckSpec("plates_without_maps", asset="maps_files"),
    ],
)
def maps_files(
    context: dg.AssetExecutionContext,
    catalog: pd.DataFrame,
    sas: SasResource,
    data_dir: DataDirResource,
):
    """The plate's DAP MAPS files in the local SAS mirror, with a manifest row per galaxy."""
    from manga_assets.dap.maps import maps_file_problem

    release = sas.release_info()
    layout = data_dir.layout
    plates = [int(key) for key in context.partition_keys]
    galaxies = catalog[catalog["plate"].isin(plates)]
    plateifus = [PlateIFU.parse(text) for text in galaxies["plateifu"]]
    locations = [maps_location(release, plateifu) for plateifu in plateifus]
    jobs = [(sas.url(location), layout.mirror / location) for location in locations]

    step = max(1, len(jobs) // 10)

    def report(event) -> None:
        if event.done % step == 0 or event.done == event.total:
            context.log.info(f"MAPS files {event.done}/{event.total}, {event.bytes / 1e6:.1f} MB")

    checked_at = pd.Timestamp.now(tz="UTC")
    with sas.downloader() as downloader:
        results = downloader.fetch_many(jobs, on_progress=report)
    _fail_if_unreachable(results, sas)
    # A file that arrived whole can still be hostile (a gzip bomb, a header without END): it is
    # walked with the reader's own checks and limits, and recorded invalid with the reason, so
    # its plate and run go on. ('', '') for a file that did not arrive.
    checked = [
        maps_file_problem(r.dest, limits=data_dir.fits_limits) if r.status == "ok" else ("", "")
        for r in results
    ]
    manifest = build_manifest(plateifus, locations, results, checked, checked_at)
    by_plate = manifests_by_plate(manifest, context.partition_keys)
    # A plate without a single usable file is data, not an error: its manifest says why, the
    # plates_without_maps check shows it, and the other plates of the run go on.
    unusable = _unusable_plates(by_plate)
    for plate, reasons in unusable.items():
        context.log.warning(f"plate {plate}: no MAPS file could be fetched ({reasons})")

    failed = manifest[manifest["status"] != "ok"]
    share = len(failed) / max(len(manifest), 1)
    # A plate's data version is the digest of its MAPS files' checksums and statuses, recorded
    # per plate in runs over many plates too (manga_assets.defs.data_versions).
    yield from output_with_plate_versions(
        context,
        by_plate,
        {plate: maps_digest(rows) for plate, rows in by_plate.items()},
        metadata={
            # A run covers a batch of plates and Dagster copies output metadata onto every plate's
            # materialisation: totals say so in their names, and the per-plate counts are listed.
            "plates_in_run": len(by_plate),
            "galaxies_in_run": len(manifest),
            "ok_in_run": int((manifest["status"] == "ok").sum()),
            "fetched_in_run": int(manifest["fetched"].sum()),
            "bytes_in_run": int(manifest["bytes"].sum()),
            "ok_by_plate": dg.MetadataValue.json(
                {plate: int((rows["status"] == "ok").sum()) for plate, rows in by_plate.items()}
            ),
            "failed": dg.MetadataValue.md(markdown_table(failed[["plateifu", "status", "reason"]])),
        },
    )
    yield dg.AssetCheckResult(
        check_name="failed_share",
        passed=share <= MAX_FAILED_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed_share": share, "max_failed_share": MAX_FAILED_SHARE},
    )
    yield _unusable_plates_check("plates_without_maps", unusable)


def _unusable_plates_check(name: str, unusable: dict[str, str]) -> dg.AssetCheckResult:
    """A warning that lists the plates of the run without any usable galaxy, and why."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=not unusable,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(f"plate {plate}: {why}" for plate, why in unusable.items())
        or "every plate of the run has at least one usable galaxy",
        metadata={"plates": ", ".join(unusable) or "none", "count": len(unusable)},
    )


@dg.asset(
    group_name=ACQUISITION,
    code_version=f"extraction-{EXTRACTION_VERSION}",
    owners=[OWNER],
    kinds={"numpy", "parquet"},
    partitions_def=plate_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(PLATES_PER_RUN),
    metadata={PRODUCT_PATH: "features/{partition}.parquet"},
    io_manager_key="products_io_manager",
    check_specs=[
        dg.AssetCheckSpec("cube_sanity", asset="line_cubes"),
        dg.AssetCheckSpec("plates_without_cubes", asset="line_cubes"),
    ],
)
def line_cubes(
    context: dg.AssetExecutionContext,
    catalog: pd.DataFrame,
    maps_files: dict[str, pd.DataFrame],
    sas: SasResource,
    data_dir: DataDirResource,
):
    """Per galaxy, the 19 line maps with inverse variance and mask on a fixed grid, and features."""
    release = sas.release_info()
    settings = ExtractionSettings()
    features = {}
    for plate, manifest in maps_files.items():
        rows = catalog[catalog["plate"] == int(plate)]
        previous_path = data_dir.layout.product(f"features/{plate}.parquet")
        previous = pd.read_parquet(previous_path) if previous_path.exists() else None
        table = extract_plate(
            manifest, rows, data_dir.layout, release, settings,
            previous=previous, log=context.log.warning, limits=data_dir.fits_limits,
        )  # fmt: skip
        features[plate] = table
    unusable = _unusable_plates(features)
    for plate, reasons in unusable.items():
        context.log.warning(f"plate {plate}: no galaxy could be extracted ({reasons})")

    every = pd.concat(features.values(), ignore_index=True)
    ok = every[every["status"] == "ok"]
    sanity = _cube_sanity(ok, settings, data_dir)
    # A release's files may carry other patch versions of its DAP; the reader accepted them
    # because their layout is the release's, and the run says so.
    counts = ok["versdap"].fillna("").value_counts() if "versdap" in ok else pd.Series()
    versions = {str(version): int(n) for version, n in counts.items()}
    for version in sorted(set(versions) - {release.dapver}):
        named = ok.loc[ok["versdap"].fillna("") == version, "plateifu"].tolist()
        context.log.warning(
            f"{len(named)} MAPS file(s) made by DAP {version or '(no VERSDAP)'}, not the release's "
            f"{release.dapver}, have its layout and were read as such: {', '.join(named[:10])}"
        )
    code_version = context.assets_def.code_versions_by_key[context.asset_key]
    # A plate's data version is the digest of its cubes' digests (each: the MAPS file's checksum
    # and the extraction settings) and this code, recorded per plate in runs over many plates too
    # (manga_assets.defs.data_versions).
    yield from output_with_plate_versions(
        context,
        features,
        {
            plate: _digest(code_version, cubes_provenance(table)["cubes"])
            for plate, table in features.items()
        },
        metadata={
            "plates_in_run": len(features),
            "galaxies_in_run": len(every),
            "cubes_in_run": len(ok),
            "extracted_in_run": int((~ok["reused"].astype(bool)).sum()),
            "invalid_in_run": int((every["status"] == "invalid").sum()),
            "cubes_by_plate": dg.MetadataValue.json(
                {plate: int((table["status"] == "ok").sum()) for plate, table in features.items()}
            ),
            "grid": settings.grid,
            "lines": len(settings.lines),
            "median_valid_fraction": float(ok["valid_fraction"].median()) if len(ok) else 0.0,
            "dap_versions_in_run": dg.MetadataValue.json(versions),
        },
    )
    yield sanity
    yield _unusable_plates_check("plates_without_cubes", unusable)


def _cube_sanity(ok: pd.DataFrame, settings: ExtractionSettings, data_dir: DataDirResource):
    from manga_assets.cubes.cube_file import CubeFormatError, read_cube

    problems = []
    for plateifu in ok["plateifu"]:
        try:
            read_cube(
                data_dir.layout.cube(PlateIFU.parse(plateifu)), plateifu=plateifu,
                line_names=settings.lines, grid=settings.grid, finite=True,
            )  # fmt: skip
        except CubeFormatError as error:
            problems.append(str(error))
    empty = ok[ok["n_valid_pixels"] == 0]["plateifu"].tolist()
    return dg.AssetCheckResult(
        check_name="cube_sanity",
        passed=not problems,
        metadata={
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            "cubes_without_valid_pixels": ", ".join(empty) or "none",
            "min_valid_fraction": float(ok["valid_fraction"].min()) if len(ok) else 0.0,
        },
    )

