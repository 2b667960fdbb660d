"""Whole-sample analyses of each model's latent space, the AGN sample and the AGN report.

Each product records what it was computed from (:mod:`manga_assets.provenance`): the Parquet
products in their key-value metadata (the ``provenance`` output metadata, which the IO manager
writes), the HTML report in a JSON sidecar written after it. What they record includes their own
config (:func:`config_record`), so a run with other settings (another number of neighbours, say)
sees them as stale.
"""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from manga_assets.atomic import write_text
from manga_assets.defs.constants import ANALYSIS, OWNER, REPORTS, VARIANTS
from manga_assets.defs.crash import crash_point
from manga_assets.defs.io_managers import PRODUCT_PATH, PROVENANCE
from manga_assets.defs.markdown import markdown_table
from manga_assets.defs.resources import DataDirResource
from manga_assets.layout import REPORT_PROVENANCE, product_path
from manga_assets.provenance import cubes_provenance, latents_provenance, with_config
from manga_assets.sas.paths import PlateIFU
from manga_assets.staleness import REPORT_INPUTS

# 2: the extended_residual anomaly component.
# 3: tail probabilities and the combined score calibrated on the sample.
# 4: comparison galaxies nearest in depth; two residual views must agree.
# 5: p_value and q_value (Benjamini-Hochberg) in anomaly_scores.
ANALYSIS_CODE_VERSION = "5"


def config_record(config: dg.Config) -> dict:
    """The settings an analysis was made with, as its provenance records them."""
    return config.model_dump()


class UmapConfig(dg.Config):
    """UMAP of the latent vectors (umap-learn)."""

    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0


class AnomalyConfig(dg.Config):
    """Anomaly scores: neighbours averaged in the latent density, and who calibrates whom.

    ``calibrate_by`` "bpt_class" (the default) compares each galaxy with galaxies of its
    measured central BPT class (``agn_sample``), so that a class the model fits worse (LINER
    nuclei, say) is not ranked anomalous as a whole; "depth" compares it with galaxies of
    similar median H-alpha S/N instead (benchmarks/SCIENCE.md measures both).
    """

    k: int = 10
    calibrate_by: str = "bpt_class"


class NeighboursConfig(dg.Config):
    """How many latent neighbours to keep per galaxy."""

    k: int = 10


def _table_asset_kwargs(variant: str, name: str, description: str) -> dict:
    return {
        "key": [variant, name],
        "group_name": ANALYSIS,
        "owners": [OWNER],
        "kinds": {"parquet"},
        "code_version": ANALYSIS_CODE_VERSION,
        "description": description,
        "metadata": {PRODUCT_PATH: product_path(f"{variant}/{name}")},
        "io_manager_key": "products_io_manager",
        "ins": {"latents": dg.AssetIn(key=[variant, "latent_table"])},
        "automation_condition": dg.AutomationCondition.eager(),
    }


def calibration_classes(
    config: AnomalyConfig, latents: pd.DataFrame, agn_sample: pd.DataFrame
) -> list[str] | None:
    """Per galaxy of ``latents``, the label it is calibrated with (None: by depth)."""
    from manga_assets.analysis.agn import calibration_classes as classes_of

    return classes_of(config.calibrate_by, latents["plateifu"], agn_sample)


def build_latent_space_assets(variant: str) -> list[dg.AssetsDefinition]:
    """UMAP, anomaly scores and neighbour table of one model's latent space."""

    @dg.asset(**_table_asset_kwargs(variant, "umap", f"2-D UMAP of the {variant} latents."))
    def umap(config: UmapConfig, latents: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        from manga_assets.analysis.embedding import umap_table

        table = umap_table(
            latents, n_neighbors=config.n_neighbors, min_dist=config.min_dist, seed=config.seed
        )
        return dg.Output(
            table,
            metadata={
                "galaxies": len(table),
                "seed": config.seed,
                PROVENANCE: dg.MetadataValue.json(
                    with_config(latents_provenance(latents), config_record(config))
                ),
            },
        )

    scores_kwargs = _table_asset_kwargs(
        variant, "anomaly_scores", f"How anomalous each galaxy is in the {variant} space."
    )
    # The galaxies' measured BPT classes calibrate the scores (AnomalyConfig.calibrate_by).
    scores_kwargs["ins"] = {**scores_kwargs["ins"], "agn_sample": dg.AssetIn(key="agn_sample")}

    @dg.asset(**scores_kwargs)
    def anomaly_scores(
        config: AnomalyConfig, latents: pd.DataFrame, agn_sample: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        from manga_assets.analysis.anomaly import anomaly_scores as score
        from manga_assets.review.fdr import with_fdr

        classes = calibration_classes(config, latents, agn_sample)
        # p_value and q_value (Benjamini-Hochberg) beside the score: the list at a chosen FDR.
        table = with_fdr(score(latents, k=config.k, calibration_classes=classes))
        top = table.sort_values("rank").head(20)
        histogram = pd.cut(table["anomaly_score"], bins=10).value_counts(sort=False)
        by_component = table.loc[table["anomaly_score"] >= 2, "anomaly_component"].value_counts()
        return dg.Output(
            table,
            metadata={
                PROVENANCE: dg.MetadataValue.json(
                    with_config(latents_provenance(latents), config_record(config))
                ),
                "galaxies": len(table),
                "calibrated_by": config.calibrate_by,
                "calibration_groups": dg.MetadataValue.json(
                    {} if classes is None else pd.Series(classes).value_counts().to_dict()
                ),
                "score_above_2": int((table["anomaly_score"] >= 2).sum()),
                "score_above_2_by_component": dg.MetadataValue.json(
                    {str(k): int(v) for k, v in by_component.items()}
                ),
                "data_quality_flagged": int(table["quality_flags"].str.len().gt(0).sum()),
                "top_20": dg.MetadataValue.md(markdown_table(top.round(3))),
                "score_histogram": dg.MetadataValue.md(
                    markdown_table(
                        pd.DataFrame(
                            {
                                "anomaly_score": histogram.index.astype(str),
                                "galaxies": histogram.to_numpy(),
                            }
                        )
                    )
                ),  # fmt: skip
            },
        )

    @dg.asset(
        **_table_asset_kwargs(
            variant, "neighbours", f"The k nearest galaxies of every galaxy in {variant} space."
        )
    )
    def neighbours(config: NeighboursConfig, latents: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        from manga_assets.analysis.neighbours import latent_neighbours

        k = min(config.k, len(latents) - 1)
        table = latent_neighbours(latents, k=k)
        return dg.Output(
            table,
            metadata={
                "galaxies": len(latents),
                "k": k,
                PROVENANCE: dg.MetadataValue.json(
                    with_config(latents_provenance(latents), config_record(config))
                ),
            },
        )

    return [umap, anomaly_scores, neighbours]


class AgnSampleConfig(dg.Config):
    """Optional user AGN catalogue (CSV with a plateifu column, or FITS with PLATEIFU)."""

    agn_catalog_path: str = ""
    snr_min: float = 3.0


@dg.asset(
    group_name=ANALYSIS,
    owners=[OWNER],
    kinds={"parquet"},
    code_version=ANALYSIS_CODE_VERSION,
    metadata={PRODUCT_PATH: product_path("agn_sample")},
    automation_condition=dg.AutomationCondition.eager(),
    io_manager_key="products_io_manager",
)
def agn_sample(
    context: dg.AssetExecutionContext,
    config: AgnSampleConfig,
    catalog: pd.DataFrame,
    line_cubes: dict[str, pd.DataFrame],
    data_dir: DataDirResource,
) -> dg.Output[pd.DataFrame]:
    """BPT class of every galaxy's centre and whether it hosts an AGN, with the evidence."""
    from manga_assets.analysis.agn import build_agn_sample, centre_classes
    from manga_assets.cubes.cube_file import read_cube

    features = pd.concat(line_cubes.values(), ignore_index=True)
    ok = features.loc[features["status"] == "ok", "plateifu"]
    bpt_rows = centre_classes(
        ((p, read_cube(data_dir.layout.cube(PlateIFU.parse(p)))) for p in ok), config.snr_min
    )
    path = Path(config.agn_catalog_path) if config.agn_catalog_path else None
    sample, unknown = build_agn_sample(bpt_rows, catalog, path)
    if unknown:
        context.log.warning(
            f"{len(unknown)} plate-IFUs of the AGN catalogue {path} are not in the sample "
            f"(skipped): {', '.join(unknown[:20])}"
        )
    sample = sample.merge(bpt_rows, on=["plateifu", "bpt_class"], how="left")
    counts = sample["bpt_class"].value_counts()
    return dg.Output(
        sample,
        metadata={
            PROVENANCE: dg.MetadataValue.json(
                with_config(cubes_provenance(features), config_record(config))
            ),
            "galaxies": len(sample),
            "agn": int(sample["is_agn"].sum()),
            "bpt_classes": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
            "agn_by_source": dg.MetadataValue.json(
                sample.loc[sample["is_agn"], "agn_source"].value_counts().to_dict()
            ),
            "unknown_catalogue_plateifus": len(unknown),
        },
    )


class ReportConfig(dg.Config):
    """The report; ``truth_table`` (a synthetic release's truth.parquet) adds an evaluation."""

    truth_table: str = ""
    n_gallery: int = 6


def _report_ins() -> dict[str, dg.AssetIn]:
    ins = {"agn_sample": dg.AssetIn(key="agn_sample")}
    for variant in VARIANTS:
        for name in REPORT_INPUTS:
            ins[f"{variant}_{name}"] = dg.AssetIn(key=[variant, name])
    return ins


@dg.asset(
    group_name=REPORTS,
    owners=[OWNER],
    kinds={"html"},
    automation_condition=dg.AutomationCondition.eager(),
    code_version=ANALYSIS_CODE_VERSION,
    ins=_report_ins(),
)
def agn_report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    data_dir: DataDirResource,
    agn_sample: pd.DataFrame,
    ae_umap: pd.DataFrame,
    ae_anomaly_scores: pd.DataFrame,
    ae_neighbours: pd.DataFrame,
    vae_umap: pd.DataFrame,
    vae_anomaly_scores: pd.DataFrame,
    vae_neighbours: pd.DataFrame,
) -> dg.MaterializeResult:
    """The AGN report: UMAPs, anomaly scores, the most anomalous AGN and their neighbours."""
    from manga_assets.analysis.evaluation import evaluate
    from manga_assets.analysis.report import write_report
    from manga_assets.cubes.cube_file import read_cube
    from manga_assets.model.reconstruct import explainer

    layout = data_dir.layout
    agn = agn_sample
    by_model = {
        "umap": {"ae": ae_umap, "vae": vae_umap},
        "anomaly_scores": {"ae": ae_anomaly_scores, "vae": vae_anomaly_scores},
        "neighbours": {"ae": ae_neighbours, "vae": vae_neighbours},
    }

    evaluation = None
    if config.truth_table:
        truth = pd.read_parquet(config.truth_table)
        evaluation = {v: evaluate(truth, by_model["anomaly_scores"][v], agn) for v in VARIANTS}

    def load_cube(plateifu: str):
        cube = read_cube(layout.cube(PlateIFU.parse(plateifu)))
        return cube.flux, cube.ivar, cube.mask

    written = write_report(
        layout.reports,
        umaps=by_model["umap"],
        anomaly_scores=by_model["anomaly_scores"],
        neighbours=by_model["neighbours"],
        agn_sample=agn,
        load_cube=load_cube,
        evaluation=evaluation,
        explain=explainer(layout.model_dir(VARIANTS[0]), load_cube),
        n_gallery=config.n_gallery,
    )
    crash_point("report_written")
    # Written after the report: a run killed in between leaves a report that is seen as stale.
    read = {"agn_sample": agn_sample.attrs.get(PROVENANCE)}
    for name, frames in by_model.items():
        read.update(
            {f"{variant}/{name}": frame.attrs.get(PROVENANCE) for variant, frame in frames.items()}
        )
    provenance = with_config({"inputs": read}, config_record(config))
    write_text(layout.product(REPORT_PROVENANCE), json.dumps(provenance, indent=1))
    metadata = {
        PROVENANCE: dg.MetadataValue.json(provenance),
        "report": dg.MetadataValue.path(str(written.html_path)),
        "figures": len(written.figure_paths),
        "galaxies": len(agn),
        "agn": int(agn["is_agn"].sum()),
        "headline": dg.MetadataValue.md(
            f"![UMAP of the latent spaces](data:image/png;base64,{written.thumbnail_png_base64})"
        ),
    }
    if evaluation:
        for variant, figures in evaluation.items():
            for name in (
                "anomaly_auc",
                "anomaly_auc_low",
                "anomaly_auc_high",
                "anomaly_precision_at_k",
                "seyfert_recall",
                "agn_precision",
            ):
                metadata[f"{variant}_{name}"] = float(figures.get(name, float("nan")))
        context.log.info(f"evaluation against the truth table: {evaluation}")
    return dg.MaterializeResult(metadata=metadata)


latent_space_assets = [
    asset for variant in VARIANTS for asset in build_latent_space_assets(variant)
]
