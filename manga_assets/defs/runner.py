"""Materialise the asset graph through Dagster, as ``manga-assets run`` does.

Runs go through a real Dagster instance (``$DAGSTER_HOME``), so every materialisation, check
result and data version is recorded and the UI shows them. Plates are processed in batches of
``PLATES_PER_RUN`` per run, as the new-plates sensor requests them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from manga_assets.atomic import clean_temporaries
from manga_assets.cubes.extract import ExtractionSettings
from manga_assets.cubes.plate import stale_plates
from manga_assets.defs.assets.analysis import (
    REPORT_PROVENANCE,
    AgnSampleConfig,
    AnomalyConfig,
    NeighboursConfig,
    ReportConfig,
    UmapConfig,
    config_record,
)
from manga_assets.defs.assets.model import (
    LATENTS_CODE_VERSION,
    TRAINING_SET_CODE_VERSION,
    TRAINING_SET_DIR,
    TrainingSetConfig,
)
from manga_assets.defs.constants import PLATES_PARTITION, VARIANTS
from manga_assets.defs.crash import crash_point
from manga_assets.defs.definitions import build_definitions
from manga_assets.defs.io_managers import PRODUCT_PATH
from manga_assets.defs.sensors import batches, plate_range_tags
from manga_assets.layout import DataLayout
from manga_assets.lock import data_dir_lock
from manga_assets.provenance import (
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
from manga_assets.sas.sidecar import part_path, record_path
from manga_assets.settings import REVALIDATE_AFTER_HOURS, Settings

WHOLE_SAMPLE_ANALYSES = ("latent_table", "umap", "anomaly_scores", "neighbours")
# What the report reads of each model's analyses.
REPORT_INPUTS = ("umap", "anomaly_scores", "neighbours")
# The analyses whose settings ``run_pipeline(analyses=...)`` takes (for both models where there
# are two), with their config classes: the settings are part of what each records.
ANALYSIS_CONFIGS: dict[str, type] = {
    "umap": UmapConfig,
    "anomaly_scores": AnomalyConfig,
    "neighbours": NeighboursConfig,
    "agn_sample": AgnSampleConfig,
}


class NoUsableCubeError(RuntimeError):
    """No galaxy of the selection could be turned into a cube: there is nothing to train on."""


@dataclass
class RunSummary:
    """What a pipeline run did, for the command line."""

    products: Path
    galaxies: int = 0
    plates: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    downloaded: int = 0
    cubes: int = 0
    extracted: int = 0
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)
    unusable_plates: list[str] = field(default_factory=list)
    checked_plates: list[str] = field(default_factory=list)
    changed_plates: list[str] = field(default_factory=list)
    built_training_set: bool = False
    embedded_plates: list[str] = field(default_factory=list)
    analysed: list[str] = field(default_factory=list)
    retrained: dict[str, bool] = field(default_factory=dict)
    report: Path | None = None
    evaluation: dict[str, float] = field(default_factory=dict)


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """The instance of ``$DAGSTER_HOME``; without one, a persistent one under the data dir."""
    if not os.environ.get("DAGSTER_HOME"):
        home = settings.data_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


# The features columns the runner decides with. A features row also holds some 80 columns of line
# fluxes and ratios; reading only these keeps a no-change rerun fast (664 plates are read).
FEATURES_READ = (
    "plateifu", "status", "reason", "reused", "maps_sha256", "settings_key", "n_valid_pixels"
)  # fmt: skip


def run_pipeline(
    settings: Settings,
    *,
    plates: list[int] | None = None,
    limit: int | None = None,
    epochs: int | None = None,
    training: dict | None = None,
    analyses: dict[str, dict] | None = None,
    truth_table: Path | None = None,
    acquisition_only: bool = False,
    revalidate_after_hours: float = REVALIDATE_AFTER_HOURS,
    instance: dg.DagsterInstance | None = None,
    log: Callable[[str], None] = print,
    wait: bool = False,
) -> RunSummary:
    """Materialise the whole graph through Dagster, holding the data directory's lock.

    One run fetches the catalogue; one run per batch of plates downloads MAPS files and extracts
    cubes; one run builds the training set and trains both models; one run per batch of plates
    embeds the galaxies; a last run makes the whole-sample analyses and the report.
    ``training`` overrides fields of ``ModelTrainingConfig`` for both models (``epochs`` is a
    shortcut for one of them). ``analyses`` overrides settings of the analyses by name
    (``{"neighbours": {"k": 5}}``; names in ``ANALYSIS_CONFIGS``, applied to both models).
    ``truth_table`` (a synthetic release's truth.parquet) adds the evaluation to the report.

    A plate's MAPS files are checked against the server (conditional requests) when the plate is
    new, when its galaxies in the catalogue changed, or when they were last checked more than
    ``revalidate_after_hours`` ago (0: every run). Released MaNGA files do not change, so by
    default a run soon after another sends no request per file.

    What is stale is decided from the products, never from what this invocation did, so a run
    killed at any point is repaired by the next: a plate is extracted again when its features do
    not record its manifest's MAPS checksums and the current extraction settings
    (:func:`stale_plates`), and asked about again when a MAPS file in the mirror is newer
    than its manifest or a download of one was cut short. The training set is built again when
    it is missing, unreadable, or does not record the current cubes. A plate is embedded again
    when its latents do not record the published model's id and its current cubes; an analysis
    is made again when it does not record the current model ids and latents, and the settings
    this run asks for (:mod:`manga_assets.provenance`).

    A plate without any usable galaxy is listed in ``unusable_plates`` and never stops the
    others; :class:`NoUsableCubeError` only when no cube came out at all.

    Only one run at a time works on a data directory (:func:`manga_assets.lock.data_dir_lock`;
    ``wait`` queues behind a running one instead of refusing), and it first removes what killed
    runs left half-written.
    """
    unknown = sorted(set(analyses or {}) - set(ANALYSIS_CONFIGS))
    if unknown:
        raise ValueError(
            f"no analysis named {', '.join(unknown)}; settings can be given for "
            f"{', '.join(ANALYSIS_CONFIGS)}"
        )
    with data_dir_lock(settings.data_dir, wait=wait, log=log):
        layout = DataLayout(settings.data_dir)
        removed = [*clean_temporaries(layout.products), *clean_temporaries(layout.mirror)]
        if removed:
            log(f"removed {len(removed)} temporary files left by an interrupted run")
        try:
            return _run_locked(
                settings, plates=plates, limit=limit, epochs=epochs, training=training,
                analyses=analyses, truth_table=truth_table, acquisition_only=acquisition_only,
                revalidate_after_hours=revalidate_after_hours, instance=instance, log=log,
            )  # fmt: skip
        finally:
            # Still under the exclusive lock: prune the versions this run superseded.
            clean_temporaries(layout.products)


def _run_locked(
    settings: Settings,
    *,
    plates: list[int] | None,
    limit: int | None,
    epochs: int | None,
    training: dict | None,
    analyses: dict[str, dict] | None,
    truth_table: Path | None,
    acquisition_only: bool,
    revalidate_after_hours: float,
    instance: dg.DagsterInstance | None,
    log: Callable[[str], None],
) -> RunSummary:
    instance = instance or instance_for(settings)
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    summary = RunSummary(products=settings.data_dir / "products")

    def execute(selection: list[str], **kwargs) -> dg.ExecuteInProcessResult:
        keys = [dg.AssetKey.from_user_string(name) for name in selection]
        result = job.execute_in_process(
            instance=instance, asset_selection=keys, raise_on_error=False, **kwargs
        )
        summary.run_ids.append(result.run_id)
        if not result.success:
            raise RuntimeError(_failure_message(result, selection))
        return result

    log(f"catalogue of {settings.release} from {settings.sas_url}")
    catalog_config = {"plates": list(plates or []), "max_galaxies": int(limit or 0)}
    execute(["catalog"], run_config={"ops": {"catalog": {"config": catalog_config}}})

    catalog = pd.read_parquet(summary.products / "catalog.parquet")
    keys = [str(plate) for plate in sorted(catalog["plate"].unique())]
    known = set(instance.get_dynamic_partitions(PLATES_PARTITION))
    instance.add_dynamic_partitions(PLATES_PARTITION, [k for k in keys if k not in known])
    summary.galaxies, summary.plates = len(catalog), keys

    ordered = [k for k in instance.get_dynamic_partitions(PLATES_PARTITION) if k in set(keys)]
    products = summary.products
    manifests = {k: _read_table(products / "manifest", k) for k in keys}
    galaxies_on = catalog.groupby(catalog["plate"].astype(str))["plateifu"].agg(frozenset)
    checked_before = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=revalidate_after_hours)
    layout = DataLayout(settings.data_dir)
    to_check = [
        k for k in ordered
        if _needs_check(manifests[k], galaxies_on[k], checked_before)
        or _mirror_newer_than_manifest(layout, k, manifests[k])
    ]  # fmt: skip
    summary.checked_plates = to_check
    if len(to_check) < len(ordered):
        log(f"{len(ordered) - len(to_check)} plates were checked against the server within "
            f"{revalidate_after_hours:g} h: their MAPS files are current")  # fmt: skip
    crash_point("maps_files")
    for batch in _bar(_contiguous_batches(to_check, instance), "MAPS files, plate batches"):
        log(f"plates {batch[0]}..{batch[-1]} ({len(batch)} plates): MAPS files")
        execute(["maps_files"], tags=plate_range_tags(batch[0], batch[-1]))
    manifests.update({k: _read_table(products / "manifest", k) for k in to_check})
    features = {k: _read_table(products / "features", k, FEATURES_READ) for k in keys}
    # A plate is extracted again when its features were not made from its current manifest
    # (a MAPS file changed, even in a run killed before extracting it) or with other settings;
    # line_cubes itself keeps the cubes of unchanged galaxies.
    settings_key = ExtractionSettings().key()
    stale = stale_plates({k: manifests[k] for k in ordered}, features, layout, settings_key)
    changed = [k for k in ordered if k in stale]
    summary.changed_plates = changed
    crash_point("cubes")
    for batch in _bar(_contiguous_batches(changed, instance), "cubes, plate batches"):
        log(f"plates {batch[0]}..{batch[-1]} ({len(batch)} plates): cubes")
        execute(["line_cubes"], tags=plate_range_tags(batch[0], batch[-1]))
    for k in changed:
        features[k] = _read_table(products / "features", k, FEATURES_READ)

    table = pd.concat(features.values())
    summary.downloaded = int(sum(manifests[k]["fetched"].sum() for k in to_check))
    summary.cubes = int((table["status"] == "ok").sum())
    rerun = table[table["plateifu"].str.split("-").str[0].isin(changed)]
    summary.extracted = int(((rerun["status"] == "ok") & ~rerun["reused"].astype(bool)).sum())
    summary.failed = table[table["status"] != "ok"][["plateifu", "status", "reason"]]
    summary.unusable_plates = [k for k in keys if not (features[k]["status"] == "ok").any()]
    if summary.cubes == 0:
        listed = "; ".join(
            f"{row.plateifu}: {row.status}: {row.reason}"
            for row in summary.failed.head(5).itertuples(index=False)
        )
        raise NoUsableCubeError(
            f"no usable cube among {summary.galaxies} galaxies ({listed}); the manifests under "
            f"{products / 'manifest'} say why. Check MANGA_SAS_URL and MANGA_RELEASE."
        )
    if acquisition_only:
        return summary

    training = {**(training or {}), **({"epochs": epochs} if epochs else {})}

    # The training set and the analyses gather every plate partition, so every partition with
    # features is compared with what they record.
    for k in instance.get_dynamic_partitions(PLATES_PARTITION):
        if k not in features:
            features[k] = _read_table(products / "features", k, FEATURES_READ)
    gathered = [
        k for k in instance.get_dynamic_partitions(PLATES_PARTITION) if features.get(k) is not None
    ]
    every = pd.concat([features[k] for k in gathered], ignore_index=True)
    # The training set records the cubes it was built from: it is built again when it is
    # missing, unreadable or records other cubes, whatever an earlier (killed) run did.
    training_set_current = _training_set_current(
        products / TRAINING_SET_DIR,
        training_set_provenance(every, TRAINING_SET_CODE_VERSION, TrainingSetConfig().model_dump()),
    )
    summary.built_training_set = not training_set_current
    # The model assets always run: they decide whether the training settings call for a new model.
    crash_point("models")
    log(("models" if training_set_current else "training set and models")
        + (f" ({training})" if training else ""))  # fmt: skip
    result = execute(
        [*([] if training_set_current else ["training_set"]), *(f"{v}/model" for v in VARIANTS)],
        run_config={"ops": {f"{v}__model": {"config": training} for v in VARIANTS}},
    )
    for variant in VARIANTS:
        event = result.asset_materializations_for_node(f"{variant}__model")[-1]
        summary.retrained[variant] = bool(event.metadata["retrained"].value)
        log(f"{variant}: {event.metadata['retrain_reason'].value}")
    # From here on, what is current is what the published models make from the current cubes;
    # each latents file and analysis records what it was made from and is compared with that.
    model_ids = {v: _model_id(products, v) for v in VARIANTS}
    paths = _product_paths(defs)
    to_embed = _stale_latents(gathered, every, model_ids, products, paths)
    summary.embedded_plates = to_embed
    crash_point("latents")
    for batch in _bar(_contiguous_batches(to_embed, instance), "latents, plate batches"):
        log(f"plates {batch[0]}..{batch[-1]}: latents")
        execute([f"{v}/latents" for v in VARIANTS], tags=plate_range_tags(batch[0], batch[-1]))
    previous_report = instance.get_latest_materialization_event(dg.AssetKey("agn_report"))
    # Without a report materialisation (a new instance) all are made again: the summary takes
    # the report's path and evaluation from it.
    op_configs = {
        name: {"config": dict((analyses or {}).get(name, {}))} for name in ANALYSIS_CONFIGS
    }
    op_configs["agn_report"] = {"config": {"truth_table": str(truth_table)} if truth_table else {}}
    configs = {
        name: config_record(config_class(**op_configs[name]["config"]))
        for name, config_class in {**ANALYSIS_CONFIGS, "agn_report": ReportConfig}.items()
    }
    stale = _stale_analyses(
        every, model_ids, products, paths, configs, every_one=previous_report is None
    )
    crash_point("analyses")
    if stale:
        log(f"analyses made from other models, latents or settings than the current ones: "
            f"{', '.join(stale)}")  # fmt: skip
        run_config = {"ops": {_op_name(name): op_configs[name.split("/")[-1]]
                              for name in stale if name.split("/")[-1] in op_configs}}  # fmt: skip
        result = execute(stale, run_config=run_config)
        report_event = result.asset_materializations_for_node("agn_report")[-1]
    else:
        log("the analyses and the report record the current models, latents and settings")
        report_event = previous_report.asset_materialization
    summary.analysed = stale
    summary.report = Path(str(report_event.metadata["report"].value))
    summary.evaluation = {
        key: value.value
        for key, value in report_event.metadata.items()
        if key.startswith(VARIANTS) and isinstance(value.value, float)
    }
    return summary


def _bar(batches: list[list[str]], description: str):
    """``batches`` with a progress bar when the command runs on a terminal."""
    if len(batches) < 2 or not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=description, unit="batch")


def _training_set_current(path: Path, wanted: dict) -> bool:
    """The training set at ``path`` opens and records ``wanted`` as what it was built from.

    Opening checks that every file is there and that the arrays and index agree (no array is
    read); a set written before it recorded its inputs counts as stale.
    """
    from manga_assets.model.dataset import TrainingSetError, open_training_set

    try:
        opened = open_training_set(path)
    except (TrainingSetError, OSError, ValueError):
        return False
    return opened.meta.get("made_from") == wanted


def _op_name(asset: str) -> str:
    """The op of an asset of the implicit job: ``ae/umap`` -> ``ae__umap``."""
    return asset.replace("/", "__")


def _needs_check(
    manifest: pd.DataFrame | None, galaxies: frozenset[str], checked_before: pd.Timestamp
) -> bool:
    """The plate is new, its catalogue galaxies changed, or its last check is too old."""
    if manifest is None or "checked_at" not in manifest:
        return True
    if set(manifest["plateifu"]) != galaxies:
        return True
    return bool(manifest["checked_at"].min() < checked_before)


def _read_table(
    folder: Path, plate: str, columns: tuple[str, ...] | None = None
) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    path = folder / f"{plate}.parquet"
    if not path.exists():
        return None
    # pyarrow's ParquetFile reads a small file in half the time of pandas.read_parquet, and a
    # rerun reads two files per plate.
    table = pq.ParquetFile(path).read(columns=list(columns) if columns else None, use_threads=False)
    return table.to_pandas()


def _mirror_newer_than_manifest(
    layout: DataLayout, plate: str, manifest: pd.DataFrame | None
) -> bool:
    """A MAPS file of the plate was (re)downloaded, or began to be, after its manifest was written.

    That happens when a run is killed between the downloads and the manifest: the manifest
    then lists checksums of files the mirror no longer holds, so the plate is asked about again.
    Each downloaded file's sidecar is written once the file is in place. A run killed during a
    download leaves the file's ``.part`` (kept, to be resumed): the server had a new version
    that no manifest lists yet, and within the revalidation window nothing else would ask
    again. Two stats per galaxy.
    """
    if manifest is None:
        return False  # no manifest: _needs_check asks about the plate anyway
    written = (layout.products / "manifest" / f"{int(plate)}.parquet").stat().st_mtime_ns
    # Plain lists, not pandas selections: this runs for every plate of every run.
    rows = zip(manifest["location"].tolist(), manifest["status"].tolist(), strict=True)
    for location, status in rows:
        if os.path.lexists(part_path(layout.mirror / location)):
            return True
        if status != "ok":
            continue
        try:
            if os.stat(record_path(layout.mirror / location)).st_mtime_ns > written:
                return True
        except FileNotFoundError:
            return True
    return False


def _product_paths(defs: dg.Definitions) -> dict[str, str]:
    """The latents, each analysis and the report with their product paths (``{partition}``
    templates for the latents), from the assets' metadata: one place says where a product is."""
    names = [f"{v}/{name}" for v in VARIANTS for name in ("latents", *WHOLE_SAMPLE_ANALYSES)]
    paths = {}
    for name in [*names, "agn_sample"]:
        key = dg.AssetKey.from_user_string(name)
        template = defs.get_assets_def(key).metadata_by_key[key][PRODUCT_PATH]
        paths[name] = getattr(template, "value", template)
    return {**paths, "agn_report": REPORT_PROVENANCE}


def _stale_latents(
    plates: list[str],
    features: pd.DataFrame,
    model_ids: dict[str, str | None],
    products: Path,
    paths: dict[str, str],
) -> list[str]:
    """The plates whose latents (of either model) do not record the current model and cubes.

    One footer read per file (no rows): this runs for every plate of every run.
    """
    cubes = plate_cube_digests(features)
    no_cube = set_digest([], [])
    stale = []
    for plate in plates:
        for variant in VARIANTS:
            wanted = latents_file_provenance(
                LATENTS_CODE_VERSION, model_ids[variant], cubes.get(plate, no_cube)
            )
            path = products / paths[f"{variant}/latents"].format(partition=plate)
            if read_provenance(path) != wanted:
                stale.append(plate)
                break
    return stale


def _stale_analyses(
    features: pd.DataFrame,
    model_ids: dict[str, str | None],
    products: Path,
    paths: dict[str, str],
    configs: dict[str, dict],
    *,
    every_one: bool = False,
) -> list[str]:
    """The analyses whose recorded inputs or settings differ from the current ones, with what
    reads them.

    The current latents are those the published models make from the current cubes (the
    latents stage has just made every plate's so); an analysis records the latents it read and
    its settings (``configs``, by analysis name without the model; the latent table has none).
    """
    wanted: dict[str, dict] = {
        "agn_sample": with_config(cubes_provenance(features), configs["agn_sample"])
    }
    for variant in VARIANTS:
        latents = expected_latents_provenance(features, model_ids[variant])
        wanted[f"{variant}/latent_table"] = latents
        wanted.update(
            {f"{variant}/{name}": with_config(latents, configs[name]) for name in REPORT_INPUTS}
        )
    report_reads = ["agn_sample", *(f"{v}/{name}" for v in VARIANTS for name in REPORT_INPUTS)]
    wanted["agn_report"] = with_config(
        {"inputs": {name: wanted[name] for name in report_reads}}, configs["agn_report"]
    )

    def recorded(name: str) -> dict | None:
        if name == "agn_report":
            return read_sidecar(products / paths[name])
        return read_provenance(products / paths[name])

    stale = {name for name, want in wanted.items() if every_one or recorded(name) != want}
    for variant in VARIANTS:  # a new latents table makes new analyses of it
        if f"{variant}/latent_table" in stale:
            stale.update(f"{variant}/{name}" for name in WHOLE_SAMPLE_ANALYSES)
        if "agn_sample" in stale:  # its BPT classes calibrate the anomaly scores
            stale.add(f"{variant}/anomaly_scores")
    if stale:
        stale.add("agn_report")  # the report shows every analysis
    return [name for name in wanted if name in stale]


def _model_id(products: Path, variant: str) -> str | None:
    path = products / "models" / variant / "metrics.json"
    return json.loads(path.read_text()).get("model_id") if path.exists() else None


def _contiguous_batches(ordered: list[str], instance: dg.DagsterInstance) -> list[list[str]]:
    """Batches of plates that are contiguous in partition order, as range runs need."""
    every = instance.get_dynamic_partitions(PLATES_PARTITION)
    position = {key: index for index, key in enumerate(every)}
    runs: list[list[str]] = []
    for key in ordered:
        if runs and position[key] == position[runs[-1][-1]] + 1:
            runs[-1].append(key)
        else:
            runs.append([key])
    return [batch for run in runs for batch in batches(run)]


def _failure_message(result: dg.ExecuteInProcessResult, selection: list[str]) -> str:
    messages = []
    for event in result.all_events:
        evaluation = event.event_specific_data
        failed_check = isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed
        if failed_check and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            text = evaluation.description or f"check {evaluation.check_name} did not pass"
            messages.append(f"{evaluation.asset_key.to_user_string()}: {text}")
        elif event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            if error and error.cls_name == "DagsterAssetCheckFailedError":
                continue  # the failed check's own description says more
            user = event.step_failure_data.user_failure_data
            text = (user.description if user and user.description else None) or (
                error.message.strip() if error else "unknown error"
            )
            messages.append(f"{event.step_key}: {text}")
    return f"run {result.run_id} of {', '.join(selection)} failed: " + (
        " | ".join(messages) or "see the Dagster run log"
    )
