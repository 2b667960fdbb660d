"""Materialise the asset graph through Dagster, as ``manga-assets run`` does.

Runs go through a real Dagster instance (``$DAGSTER_HOME``), so every materialisation, check
result and data version is recorded and the UI shows them. Plates are processed in batches of
``PLATES_PER_RUN`` per run, as the new-plates sensor requests them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from manga_assets.atomic import clean_temporaries
from manga_assets.cubes.extract import ExtractionSettings
from manga_assets.defs.assets.analysis import (
    AgnSampleConfig,
    AnomalyConfig,
    NeighboursConfig,
    ReportConfig,
    UmapConfig,
    config_record,
)
from manga_assets.defs.assets.model import TrainingSetConfig
from manga_assets.defs.constants import PLATES_PARTITION, VARIANTS
from manga_assets.defs.crash import crash_point
from manga_assets.defs.definitions import build_definitions
from manga_assets.defs.sensors import batches, plate_range_tags
from manga_assets.layout import DataLayout, product_path
from manga_assets.lock import data_dir_lock
from manga_assets.settings import REVALIDATE_AFTER_HOURS, Settings
from manga_assets.staleness import (
    FEATURES_READ,
    describe,
    names,
    new_plates,
    plates_to_check,
    published_model_ids,
    read_plate_table,
    stale_analyses,
    stale_features,
    stale_latents,
    stale_training_set,
)

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
    killed at any point is repaired by the next (:mod:`manga_assets.staleness` decides, stage by
    stage): a plate is extracted again when its features do not record its manifest's MAPS
    checksums and the current extraction settings, and asked about again when a MAPS file in the
    mirror is newer than its manifest or a download of one was cut short. The training set is
    built again when it is missing, unreadable, or does not record the current cubes. A plate is
    embedded again when its latents do not record the published model's id and its current
    cubes; an analysis is made again when it does not record the current model ids and latents,
    and the settings this run asks for (:mod:`manga_assets.provenance`).

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
    """Each stage asks :mod:`manga_assets.staleness` what is stale, makes it through Dagster and
    reads what came out."""
    run = _Run(settings, instance or instance_for(settings), log)
    catalog = _catalog_stage(run, plates, limit)
    features = _acquisition_stages(run, catalog, revalidate_after_hours)
    if acquisition_only:
        return run.summary
    # The training set and the analyses gather every plate partition, so every partition with
    # features is compared with what they record.
    gathered, every = _every_partition(run, features)
    training = {**(training or {}), **({"epochs": epochs} if epochs else {})}
    _model_stage(run, every, training)
    # From here on, what is current is what the published models make from the current cubes;
    # each latents file and analysis records what it was made from and is compared with that.
    model_ids = published_model_ids(run.layout, VARIANTS)
    _latents_stage(run, gathered, every, model_ids)
    _analysis_stage(run, every, model_ids, analyses, truth_table)
    return run.summary


class _Run:
    """One invocation's Dagster instance and job, and the summary its stages fill."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance, log: Callable) -> None:
        self.settings, self.instance, self.log = settings, instance, log
        self.layout = DataLayout(settings.data_dir)
        self.job = build_definitions(settings).resolve_implicit_global_asset_job_def()
        self.summary = RunSummary(products=self.layout.products)

    def execute(self, selection: list[str], **kwargs) -> dg.ExecuteInProcessResult:
        """Materialise the assets named in ``selection``; a failed run raises what failed."""
        keys = [dg.AssetKey.from_user_string(name) for name in selection]
        result = self.job.execute_in_process(
            instance=self.instance, asset_selection=keys, raise_on_error=False, **kwargs
        )
        self.summary.run_ids.append(result.run_id)
        if not result.success:
            raise RuntimeError(_failure_message(result, selection))
        return result

    def over_plates(self, plates: list[str], selection: list[str], label: str) -> None:
        """Materialise ``selection`` for ``plates``, one run per batch of contiguous plates."""
        for batch in _bar(_contiguous_batches(plates, self.instance), f"{label}, plate batches"):
            self.log(f"plates {batch[0]}..{batch[-1]} ({len(batch)} plates): {label}")
            self.execute(selection, tags=plate_range_tags(batch[0], batch[-1]))

    def partitions(self) -> list[str]:
        return self.instance.get_dynamic_partitions(PLATES_PARTITION)

    def features(self, plate: str) -> pd.DataFrame | None:
        return read_plate_table(self.layout, "line_cubes", plate, FEATURES_READ)


def _catalog_stage(run: _Run, plates: list[int] | None, limit: int | None) -> pd.DataFrame:
    """Fetch the catalogue and add its new plates as partitions."""
    settings, summary = run.settings, run.summary
    run.log(f"catalogue of {settings.release} from {settings.sas_url}")
    catalog_config = {"plates": list(plates or []), "max_galaxies": int(limit or 0)}
    run.execute(["catalog"], run_config={"ops": {"catalog": {"config": catalog_config}}})
    catalog = pd.read_parquet(run.layout.product(product_path("catalog")))
    keys = [str(plate) for plate in sorted(catalog["plate"].unique())]
    run.instance.add_dynamic_partitions(PLATES_PARTITION, new_plates(keys, run.partitions()))
    summary.galaxies, summary.plates = len(catalog), keys
    return catalog


def _acquisition_stages(
    run: _Run, catalog: pd.DataFrame, revalidate_after_hours: float
) -> dict[str, pd.DataFrame | None]:
    """Download the MAPS files of the plates to check and extract the stale plates' cubes; the
    features of the catalogue's plates, by plate."""
    summary, layout, log = run.summary, run.layout, run.log
    keys = summary.plates
    ordered = [k for k in run.partitions() if k in set(keys)]
    manifests = {k: read_plate_table(layout, "maps_files", k) for k in keys}
    galaxies_on = catalog.groupby(catalog["plate"].astype(str))["plateifu"].agg(frozenset)
    checked_before = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=revalidate_after_hours)
    to_check = plates_to_check(
        layout, {k: manifests[k] for k in ordered}, galaxies_on.to_dict(), checked_before
    )
    summary.checked_plates = names(to_check)
    if len(to_check) < len(ordered):
        log(f"{len(ordered) - len(to_check)} plates were checked against the server within "
            f"{revalidate_after_hours:g} h: their MAPS files are current")  # fmt: skip
    if to_check:
        log(f"{len(to_check)} plates to check against the server ({describe(to_check)})")
    crash_point("maps_files")
    run.over_plates(summary.checked_plates, ["maps_files"], "MAPS files")
    manifests.update({k: read_plate_table(layout, "maps_files", k) for k in summary.checked_plates})
    features = {k: run.features(k) for k in keys}
    # A plate is extracted again when its features were not made from its current manifest
    # (a MAPS file changed, even in a run killed before extracting it) or with other settings;
    # line_cubes itself keeps the cubes of unchanged galaxies.
    stale = stale_features(
        {k: manifests[k] for k in ordered}, features, layout, ExtractionSettings().key()
    )
    summary.changed_plates = names(stale)
    if stale:
        log(f"{len(stale)} plates to extract ({describe(stale)})")
    crash_point("cubes")
    run.over_plates(summary.changed_plates, ["line_cubes"], "cubes")
    features.update({k: run.features(k) for k in summary.changed_plates})
    _summarise_acquisition(summary, manifests, features)
    return features


def _summarise_acquisition(
    summary: RunSummary,
    manifests: dict[str, pd.DataFrame | None],
    features: dict[str, pd.DataFrame | None],
) -> None:
    """Count what the acquisition stages fetched and extracted; :class:`NoUsableCubeError` when
    no galaxy has a usable cube."""
    table = pd.concat(features.values())
    summary.downloaded = int(sum(manifests[k]["fetched"].sum() for k in summary.checked_plates))
    summary.cubes = int((table["status"] == "ok").sum())
    rerun = table[table["plateifu"].str.split("-").str[0].isin(summary.changed_plates)]
    summary.extracted = int(((rerun["status"] == "ok") & ~rerun["reused"].astype(bool)).sum())
    summary.failed = table[table["status"] != "ok"][["plateifu", "status", "reason"]]
    summary.unusable_plates = [
        k for k in summary.plates if not (features[k]["status"] == "ok").any()
    ]
    if summary.cubes == 0:
        listed = "; ".join(
            f"{row.plateifu}: {row.status}: {row.reason}"
            for row in summary.failed.head(5).itertuples(index=False)
        )
        raise NoUsableCubeError(
            f"no usable cube among {summary.galaxies} galaxies ({listed}); the manifests under "
            f"{summary.products / 'manifest'} say why. Check MANGA_SAS_URL and MANGA_RELEASE."
        )


def _every_partition(
    run: _Run, features: dict[str, pd.DataFrame | None]
) -> tuple[list[str], pd.DataFrame]:
    """The partitions with features, and their features in one table (read where missing)."""
    partitions = run.partitions()
    for k in partitions:
        if k not in features:
            features[k] = run.features(k)
    gathered = [k for k in partitions if features.get(k) is not None]
    return gathered, pd.concat([features[k] for k in gathered], ignore_index=True)


def _model_stage(run: _Run, every: pd.DataFrame, training: dict) -> None:
    """Build the training set if it is stale and train (or keep) both models."""
    stale_set = stale_training_set(run.layout, every, TrainingSetConfig().model_dump())
    run.summary.built_training_set = stale_set is not None
    # The model assets always run: they decide whether the training settings call for a new model.
    crash_point("models")
    if stale_set:
        run.log(f"training set: {stale_set.reason}")
    run.log(("training set and models" if stale_set else "models")
            + (f" ({training})" if training else ""))  # fmt: skip
    result = run.execute(
        [*(["training_set"] if stale_set else []), *(f"{v}/model" for v in VARIANTS)],
        run_config={"ops": {f"{v}__model": {"config": training} for v in VARIANTS}},
    )
    for variant in VARIANTS:
        event = result.asset_materializations_for_node(f"{variant}__model")[-1]
        run.summary.retrained[variant] = bool(event.metadata["retrained"].value)
        run.log(f"{variant}: {event.metadata['retrain_reason'].value}")


def _latents_stage(
    run: _Run, gathered: list[str], every: pd.DataFrame, model_ids: dict[str, str | None]
) -> None:
    """Embed the plates whose latents are not those of the published models and current cubes."""
    to_embed = stale_latents(run.layout, gathered, every, model_ids)
    run.summary.embedded_plates = names(to_embed)
    if to_embed:
        run.log(f"{len(to_embed)} plates to embed ({describe(to_embed)})")
    crash_point("latents")
    run.over_plates(run.summary.embedded_plates, [f"{v}/latents" for v in VARIANTS], "latents")


def _analysis_stage(
    run: _Run,
    every: pd.DataFrame,
    model_ids: dict[str, str | None],
    analyses: dict[str, dict] | None,
    truth_table: Path | None,
) -> None:
    """Make the stale analyses and the report; the summary takes the report and its evaluation."""
    previous_report = run.instance.get_latest_materialization_event(dg.AssetKey("agn_report"))
    op_configs = {
        name: {"config": dict((analyses or {}).get(name, {}))} for name in ANALYSIS_CONFIGS
    }
    op_configs["agn_report"] = {"config": {"truth_table": str(truth_table)} if truth_table else {}}
    configs = {
        name: config_record(config_class(**op_configs[name]["config"]))
        for name, config_class in {**ANALYSIS_CONFIGS, "agn_report": ReportConfig}.items()
    }
    # Without a report materialisation (a new instance) all are made again: the summary takes
    # the report's path and evaluation from it.
    remake_all = "no report in this Dagster instance" if previous_report is None else None
    stale = stale_analyses(run.layout, every, model_ids, configs, remake_all=remake_all)
    crash_point("analyses")
    selection = names(stale)
    if stale:
        run.log(f"analyses made from other models, latents or settings than the current ones: "
                f"{', '.join(selection)} ({describe(stale, shown=len(stale))})")  # fmt: skip
        configured = [name for name in selection if name.split("/")[-1] in op_configs]
        run_config = {
            "ops": {_op_name(name): op_configs[name.split("/")[-1]] for name in configured}
        }
        result = run.execute(selection, run_config=run_config)
        report_event = result.asset_materializations_for_node("agn_report")[-1]
    else:
        run.log("the analyses and the report record the current models, latents and settings")
        report_event = previous_report.asset_materialization
    summary = run.summary
    summary.analysed = selection
    summary.report = Path(str(report_event.metadata["report"].value))
    summary.evaluation = {
        key: value.value
        for key, value in report_event.metadata.items()
        if key.startswith(VARIANTS) and isinstance(value.value, float)
    }


def _bar(batches: list[list[str]], description: str):
    """``batches`` with a progress bar when the command runs on a terminal."""
    if len(batches) < 2 or not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=description, unit="batch")


def _op_name(asset: str) -> str:
    """The op of an asset of the implicit job: ``ae/umap`` -> ``ae__umap``."""
    return asset.replace("/", "__")


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
