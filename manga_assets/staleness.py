"""What must be made again, and why, decided from the products on disk and the settings alone.

Every stage of a run asks here which of its products are stale (``manga-assets run`` through
:mod:`manga_assets.defs.runner`, the sensors through :mod:`manga_assets.defs.sensors`). Nothing
here remembers what an earlier invocation did, so a run killed at any instant is repaired by the
next (DESIGN.md, "Habits"). In stage order:

1. a plate's MAPS files are asked about again (:func:`plates_to_check`) when the plate is new,
   its galaxies changed, its last check is too old, or the mirror holds a file the manifest does
   not list;
2. a plate is extracted again (:func:`stale_features`) when its features do not record its
   manifest's MAPS checksums and the current extraction settings, or a cube is missing;
3. the training set is built again (:func:`stale_training_set`) when it is missing, unreadable,
   or records other cubes or split settings;
4. a plate is embedded again (:func:`stale_latents`) when its latents do not record the published
   model's id (:func:`published_model_ids`), its current cubes and the latents code version;
5. an analysis is made again (:func:`stale_analyses`) when it does not record the current latents
   (or cubes) and settings, or when an analysis it reads is made again.

Each answer is a list of :class:`Stale`: the plate or asset and the reason, for the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manga_assets.layout import REPORT_PROVENANCE, TRAINING_SET_DIR, DataLayout, product_path
from manga_assets.provenance import (
    LATENTS_CODE_VERSION,
    TRAINING_SET_CODE_VERSION,
    cubes_provenance,
    expected_latents_provenance,
    latents_file_provenance,
    plate_cube_digests,
    read_provenance,
    read_sidecar,
    set_digest,
    training_set_provenance,
    with_config,
)
from manga_assets.sas.paths import PlateIFU
from manga_assets.sas.sidecar import part_path, record_path

# The analyses each model's latents table feeds, the table itself first.
WHOLE_SAMPLE_ANALYSES = ("latent_table", "umap", "anomaly_scores", "neighbours")
# What the report reads of each model's analyses (besides the AGN sample).
REPORT_INPUTS = ("umap", "anomaly_scores", "neighbours")
# The features columns the decisions read. A features row also holds some 80 columns of line
# fluxes and ratios; reading only these keeps a no-change rerun fast (664 plates are read).
FEATURES_READ = (
    "plateifu", "status", "reason", "reused", "maps_sha256", "settings_key", "n_valid_pixels"
)  # fmt: skip


@dataclass(frozen=True)
class Stale:
    """A plate or asset to make again, and why."""

    name: str
    reason: str


def names(stale: Iterable[Stale]) -> list[str]:
    """The plates or assets of ``stale``, in its order."""
    return [item.name for item in stale]


def describe(stale: list[Stale], shown: int = 3) -> str:
    """``stale`` for one log line: the first few with their reasons, then how many more."""
    text = "; ".join(f"{item.name}: {item.reason}" for item in stale[:shown])
    return text + (f"; and {len(stale) - shown} more" if len(stale) > shown else "")


def read_plate_table(
    layout: DataLayout, asset: str, plate: str, columns: tuple[str, ...] | None = None
) -> pd.DataFrame | None:
    """The Parquet product of a per-plate ``asset`` ('maps_files', 'line_cubes') for ``plate``;
    None when there is none yet."""
    import pyarrow.parquet as pq

    path = layout.products / product_path(asset).format(partition=plate)
    if not path.exists():
        return None
    # pyarrow's ParquetFile reads a small file in half the time of pandas.read_parquet, and a
    # rerun reads two files per plate.
    table = pq.ParquetFile(path).read(columns=list(columns) if columns else None, use_threads=False)
    return table.to_pandas()


def new_plates(catalog_plates: Iterable[str], partitions: Iterable[str]) -> list[str]:
    """The catalogue's plates that are not partitions yet, in catalogue order."""
    known = set(partitions)
    return [plate for plate in catalog_plates if plate not in known]


def plates_to_check(
    layout: DataLayout,
    manifests: dict[str, pd.DataFrame | None],
    galaxies_on: dict[str, frozenset[str]],
    checked_before: pd.Timestamp,
) -> list[Stale]:
    """The plates (of ``manifests``, in its order) whose MAPS files must be asked about again.

    ``galaxies_on`` holds each plate's galaxies in the catalogue; a manifest whose oldest check
    is before ``checked_before`` is checked again.
    """
    stale = []
    for plate, manifest in manifests.items():
        reason = _check_reason(manifest, galaxies_on[plate], checked_before) or _mirror_reason(
            layout, plate, manifest
        )
        if reason:
            stale.append(Stale(plate, reason))
    return stale


def _check_reason(
    manifest: pd.DataFrame | None, galaxies: frozenset[str], checked_before: pd.Timestamp
) -> str | None:
    """Why the plate is asked about again: new, its catalogue galaxies changed, or its last check
    is too old."""
    if manifest is None:
        return "new plate: no manifest yet"
    if "checked_at" not in manifest:
        return "its manifest records no check time"
    listed = set(manifest["plateifu"])
    if listed != galaxies:
        return (
            f"its galaxies in the catalogue changed ({len(galaxies - listed)} added, "
            f"{len(listed - galaxies)} removed)"
        )
    last = manifest["checked_at"].min()
    if last < checked_before:
        return f"last checked at {last}, before {checked_before}"
    return None


def _mirror_reason(layout: DataLayout, plate: str, manifest: pd.DataFrame | None) -> str | None:
    """Why the mirror says the manifest is out of date, if it does.

    A MAPS file of the plate was (re)downloaded, or began to be, after its manifest was written:
    that happens when a run is killed between the downloads and the manifest, which then lists
    checksums of files the mirror no longer holds. Each downloaded file's sidecar is written once
    the file is in place. A run killed during a download leaves the file's ``.part`` (kept, to be
    resumed): the server had a new version that no manifest lists yet, and within the
    revalidation window nothing else would ask again. Two stats per galaxy.
    """
    if manifest is None:
        return None  # no manifest: _check_reason asks about the plate anyway
    path = layout.products / product_path("maps_files").format(partition=int(plate))
    written = path.stat().st_mtime_ns
    # Plain lists, not pandas selections: this runs for every plate of every run.
    rows = zip(manifest["location"].tolist(), manifest["status"].tolist(), strict=True)
    for location, status in rows:
        if os.path.lexists(part_path(layout.mirror / location)):
            return f"a download of {location} was cut short"
        if status != "ok":
            continue
        try:
            if os.stat(record_path(layout.mirror / location)).st_mtime_ns > written:
                return f"{location} was downloaded after the manifest was written"
        except FileNotFoundError:
            return f"the mirror has no download record of {location}"
    return None


def stale_features(
    manifests: dict[str, pd.DataFrame],
    features: dict[str, pd.DataFrame | None],
    layout: DataLayout,
    settings_key: str,
) -> list[Stale]:
    """The plates (of ``manifests``, in its order) whose features and cubes were not made from
    exactly what their manifest lists.

    Every features row must record its manifest row's MAPS sha256 and the current extraction
    ``settings_key``, keep the manifest's failure status when the download failed, and have its
    cube on disk when 'ok'. All plates are compared in one table: this runs on every
    ``manga-assets run``.
    """
    reasons: dict[str, str] = {}
    usable = {}
    for plate, table in features.items():
        if table is None:
            reasons[plate] = "no features yet"
        elif not {"maps_sha256", "settings_key"} <= set(table.columns):
            reasons[plate] = "its features record no MAPS checksums or extraction settings"
        else:
            usable[plate] = table
    reasons.update({plate: "no features yet" for plate in manifests if plate not in features})
    if usable:
        reasons.update(_stale_rows(manifests, usable, layout, settings_key))
    return [Stale(plate, reasons[plate]) for plate in manifests if plate in reasons]


def _stale_rows(
    manifests: dict[str, pd.DataFrame],
    usable: dict[str, pd.DataFrame],
    layout: DataLayout,
    settings_key: str,
) -> dict[str, str]:
    """Per plate with a features row not made from its manifest row, why (its first such row)."""
    # One concatenation each (per-plate pandas calls cost ~1 s at survey scale).
    listed = pd.concat({k: m for k, m in manifests.items() if k in usable}, names=["key", None])
    listed = listed.reset_index(level="key")[["key", "plateifu", "status", "sha256"]]
    recorded = pd.concat(usable.values())[["plateifu", "status", "maps_sha256", "settings_key"]]
    joined = listed.merge(
        recorded, on="plateifu", how="outer", suffixes=("_manifest", ""), indicator=True
    )
    downloaded = joined["status_manifest"] == "ok"
    # Each condition that makes a row stale, with its reason; the first that holds is given.
    both = joined["_merge"] == "both"
    same_status = (downloaded & joined["status"].isin(["ok", "invalid"])) | (
        ~downloaded & (joined["status"] == joined["status_manifest"])
    )
    ok = (joined["status"] == "ok").to_numpy()
    has_cube = np.ones(len(joined), dtype=bool)
    has_cube[ok] = [layout.cube(PlateIFU.parse(p)).exists() for p in joined.loc[ok, "plateifu"]]
    conditions = [
        (joined["_merge"] == "left_only").to_numpy(),
        (joined["_merge"] == "right_only").to_numpy(),
        (both & (joined["maps_sha256"] != joined["sha256"])).to_numpy(),
        (both & (joined["settings_key"] != settings_key)).to_numpy(),
        (both & ~same_status).to_numpy(),
        ~has_cube,
    ]
    why = [
        "{} is in the manifest but has no features row",
        "{} has a features row but is not in the manifest",
        "{}'s features were made from another MAPS file than the manifest lists",
        "{}'s cube was extracted with other settings",
        "{}'s features status does not follow its download status",
        "{}'s cube is missing",
    ]
    stale = np.logical_or.reduce(conditions)
    # A features row without a manifest row has no key: it belongs to the plate in its name.
    plates = joined["key"].fillna(joined["plateifu"].str.split("-").str[0]).to_numpy()
    found = np.select(conditions, list(range(len(why))), default=-1)
    reasons: dict[str, str] = {}
    counts = pd.Series(plates[stale]).value_counts()
    for plate, plateifu, which in zip(
        plates[stale], joined.loc[stale, "plateifu"], found[stale], strict=True
    ):
        if plate in manifests and plate not in reasons:
            more = counts[plate] - 1
            reasons[plate] = why[which].format(plateifu) + (
                f" (and {more} more galaxies)" if more else ""
            )
    return reasons


def stale_training_set(layout: DataLayout, features: pd.DataFrame, config: dict) -> Stale | None:
    """Why the training set must be built again from ``features`` (every plate's), if it must.

    It must when it is missing or does not open (every file there, the arrays and index agree;
    no array is read), or records other cubes, code version or split settings (``config``) than
    it would be built from now. A set written before it recorded its inputs counts as stale.
    """
    from manga_assets.model.dataset import TrainingSetError, open_training_set

    name = "training_set"
    try:
        opened = open_training_set(layout.products / TRAINING_SET_DIR)
    except (TrainingSetError, OSError, ValueError) as error:
        return Stale(name, f"missing or unreadable ({error})")
    recorded = opened.meta.get("made_from")
    if recorded is None:
        return Stale(name, "it records no inputs (built before training sets did)")
    wanted = training_set_provenance(features, TRAINING_SET_CODE_VERSION, config)
    if recorded != wanted:
        return Stale(name, f"built from other {_differing(recorded, wanted)}")
    return None


def published_model_ids(layout: DataLayout, variants: Iterable[str]) -> dict[str, str | None]:
    """Each model variant's published ``model_id`` (its ``metrics.json``); None when there is
    no model yet."""
    ids: dict[str, str | None] = {}
    for variant in variants:
        path = layout.model_dir(variant) / "metrics.json"
        ids[variant] = json.loads(path.read_text()).get("model_id") if path.exists() else None
    return ids


def stale_latents(
    layout: DataLayout,
    plates: list[str],
    features: pd.DataFrame,
    model_ids: dict[str, str | None],
) -> list[Stale]:
    """The plates (in ``plates`` order) whose latents, of any model of ``model_ids``, do not
    record that model, the plate's current cubes (from ``features``, of every plate) and the
    latents code version.

    One footer read per file (no rows): this runs for every plate of every run.
    """
    cubes = plate_cube_digests(features)
    no_cube = set_digest([], [])
    stale = []
    for plate in plates:
        for variant, model_id in model_ids.items():
            wanted = latents_file_provenance(
                LATENTS_CODE_VERSION, model_id, cubes.get(plate, no_cube)
            )
            path = layout.products / product_path(f"{variant}/latents").format(partition=plate)
            recorded = read_provenance(path)
            if recorded != wanted:
                what = "no record" if recorded is None else f"other {_differing(recorded, wanted)}"
                stale.append(Stale(plate, f"{variant} latents: {what}"))
                break
    return stale


def stale_analyses(
    layout: DataLayout,
    features: pd.DataFrame,
    model_ids: dict[str, str | None],
    configs: dict[str, dict],
    *,
    remake_all: str | None = None,
) -> list[Stale]:
    """The analyses whose recorded inputs or settings differ from the current ones, with what
    reads them, in the order they are made.

    The current latents are those the published models (``model_ids``) make from the current
    cubes (``features``, of every plate): the latents stage has just made every plate's so. An
    analysis records the latents it read and its settings (``configs``, by analysis name without
    the model: umap, anomaly_scores, neighbours, agn_sample, agn_report; the latent table has
    none). ``remake_all`` says why every analysis is made again, when it is.
    """
    wanted = _analysis_records(features, model_ids, configs)
    reasons: dict[str, str] = {}
    for name, want in wanted.items():
        if remake_all:
            reasons[name] = remake_all
            continue
        recorded = _recorded(layout, name)
        if recorded is None:
            reasons[name] = "no record (never made, or unreadable)"
        elif recorded != want:
            reasons[name] = f"it records other {_differing(recorded, want)}"
    for variant in model_ids:
        if f"{variant}/latent_table" in reasons:  # a new latents table makes new analyses of it
            for name in WHOLE_SAMPLE_ANALYSES:
                reasons.setdefault(f"{variant}/{name}", f"it reads {variant}/latent_table")
        if "agn_sample" in reasons:  # its BPT classes calibrate the anomaly scores
            reasons.setdefault(f"{variant}/anomaly_scores", "agn_sample's classes calibrate it")
    if reasons:
        reasons.setdefault("agn_report", "the report shows every analysis")
    return [Stale(name, reasons[name]) for name in wanted if name in reasons]


def _analysis_records(
    features: pd.DataFrame, model_ids: dict[str, str | None], configs: dict[str, dict]
) -> dict[str, dict]:
    """What each analysis records when it is current, in the order they are made."""
    wanted: dict[str, dict] = {
        "agn_sample": with_config(cubes_provenance(features), configs["agn_sample"])
    }
    for variant, model_id in model_ids.items():
        latents = expected_latents_provenance(features, model_id)
        wanted[f"{variant}/latent_table"] = latents
        wanted.update(
            {f"{variant}/{name}": with_config(latents, configs[name]) for name in REPORT_INPUTS}
        )
    report_reads = ["agn_sample", *(f"{v}/{name}" for v in model_ids for name in REPORT_INPUTS)]
    wanted["agn_report"] = with_config(
        {"inputs": {name: wanted[name] for name in report_reads}}, configs["agn_report"]
    )
    return wanted


def _recorded(layout: DataLayout, name: str) -> dict | None:
    """What the product of analysis ``name`` records (a JSON sidecar for the HTML report)."""
    if name == "agn_report":
        return read_sidecar(layout.products / REPORT_PROVENANCE)
    return read_provenance(layout.products / product_path(name))


def _differing(recorded: dict, wanted: dict) -> str:
    """The fields in which a recorded provenance differs from the wanted one, for a reason."""
    fields = sorted(k for k in {*recorded, *wanted} if recorded.get(k) != wanted.get(k))
    return ", ".join(fields) if fields else "inputs"
