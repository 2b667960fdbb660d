"""The AGN report: one HTML page with its PNG figures beside it.

The page shows what the reference study's AGN figures show: the latent space of each model
(UMAP coloured by anomaly score, AGN marked, AGN vs all score histograms), the most anomalous AGN
as line and BPT maps, and the latent nearest neighbours of the two most anomalous AGN; then
tables of scores, neighbours and evaluation metrics. Figures are linked by relative paths, so the
folder can be moved or served as it is.

Everything comes in as plain tables plus a ``load_cube`` callable; nothing here needs Dagster.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from manga_assets.analysis.anomaly import COMPONENTS
from manga_assets.analysis.figures import (
    ExplainedRow,
    GalleryRow,
    LoadCube,
    plot_explanations,
    plot_map_gallery,
    plot_umap_pair,
)
from manga_assets.atomic import atomic_path
from manga_assets.dap.datamodel import PROJECT_LINES

REPORT_NAME = "agn_report.html"
UMAP_FIGURE = "umap_anomaly.png"
GALLERY_FIGURE = "agn_gallery.png"
NEIGHBOURS_FIGURE = "agn_neighbours.png"
EXPLANATIONS_FIGURE = "agn_explanations.png"
# AGN whose deciding line is shown with its residual.
N_EXPLAINED = 4

# Dagster metadata values should stay small; the thumbnail is shrunk until it fits.
THUMBNAIL_MAX_BYTES = 100_000
THUMBNAIL_WIDTH = 480

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class WrittenReport:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    html_path : Path
        The ``agn_report.html`` file.
    figure_paths : tuple of Path
        The PNG figures beside it.
    thumbnail_png_base64 : str
        A base64 PNG (< 100 kB) of the headline figure, for a Dagster ``MetadataValue.md``
        image or similar.
    """

    html_path: Path
    figure_paths: tuple[Path, ...]
    thumbnail_png_base64: str


logger = logging.getLogger(__name__)


class Explanation(Protocol):
    """What the published model makes of one galaxy (`manga_assets.model.reconstruct`)."""

    lines: tuple[str, ...]
    smoothed_residual: np.ndarray  # (L, H, W), signed significance of the PSF-smoothed residual
    coherent_peak: np.ndarray  # (L,), the peak of |smoothed_residual| per line


Explain = Callable[[str], Explanation]
# What may go wrong for one galaxy (a cube or model that cannot be read): its row is left out.
_EXPLAIN_ERRORS = (OSError, KeyError, ValueError, RuntimeError)


def deciding_line(score_row: Mapping, lines: Sequence[str], coherent_peak: np.ndarray) -> str:
    """The line that decided the galaxy's score, or, where no line did (the latent density,
    say), the line whose smoothed residual peaks highest."""
    line = str(score_row.get("anomaly_line") or "")
    return line if line in lines else str(lines[int(np.argmax(coherent_peak))])


def most_anomalous_agn(
    anomaly_scores: pd.DataFrame, agn_sample: pd.DataFrame, n: int
) -> pd.DataFrame:
    """The ``n`` AGN with the highest anomaly score, most anomalous first.

    Returns the anomaly-score rows joined with ``bpt_class`` and ``agn_source``.
    """
    agn = agn_sample.loc[agn_sample["is_agn"].astype(bool), ["plateifu", "bpt_class", "agn_source"]]
    joined = anomaly_scores.merge(agn, on="plateifu", how="inner")
    return joined.sort_values(["rank", "plateifu"], kind="stable", ignore_index=True).head(n)


def thumbnail_base64(png_path: Path, width: int = THUMBNAIL_WIDTH) -> str:
    """A base64 PNG of ``png_path`` scaled to ``width`` pixels or less, under 100 kB."""
    from PIL import Image

    with Image.open(png_path) as image:
        image = image.convert("RGB")
        while True:
            scaled = image.copy()
            scaled.thumbnail((width, width))
            buffer = io.BytesIO()
            scaled.save(buffer, format="PNG", optimize=True)
            if buffer.tell() < THUMBNAIL_MAX_BYTES or width <= 64:
                return base64.b64encode(buffer.getvalue()).decode("ascii")
            width = int(width * 0.75)


def _reason(row: pd.Series) -> str:
    """What made the galaxy anomalous: the deciding component and, for a line's, the line."""
    component = str(row.get("anomaly_component", ""))
    line = str(row.get("anomaly_line", "") or "")
    return f"{component} {line}".strip()


def _caption(row: pd.Series, model: str) -> str:
    return (
        f"{row['plateifu']}\n{row['bpt_class']}, {row['agn_source']}\n"
        f"{model} score {row['anomaly_score']:.1f} ({_reason(row)})\nrank {int(row['rank'])}"
    )


def _neighbour_rows(
    top_agn: pd.DataFrame, neighbours: pd.DataFrame, model: str, n_neighbours: int
) -> list[GalleryRow]:
    rows: list[GalleryRow] = []
    for _, agn in top_agn.head(2).iterrows():
        rows.append(GalleryRow(str(agn["plateifu"]), "AGN\n" + _caption(agn, model)))
        mine = neighbours.loc[neighbours["plateifu"] == agn["plateifu"]]
        for _, hit in mine.sort_values("neighbour_rank").head(n_neighbours).iterrows():
            rows.append(
                GalleryRow(
                    str(hit["neighbour_plateifu"]),
                    f"{hit['neighbour_plateifu']}\nneighbour {int(hit['neighbour_rank'])} "
                    f"of {agn['plateifu']}\ndistance {hit['distance']:.2f}",
                )
            )
    return rows


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3g}", border=0)


def _share_above(scores: pd.DataFrame, threshold: float) -> float:
    """Share of the galaxies whose anomaly score exceeds ``threshold`` (0 for an empty table)."""
    return float((scores["anomaly_score"] > threshold).mean()) if len(scores) else 0.0


def _figure_html(name: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_report(
    out_dir: Path,
    *,
    umaps: Mapping[str, pd.DataFrame],
    anomaly_scores: Mapping[str, pd.DataFrame],
    neighbours: Mapping[str, pd.DataFrame],
    agn_sample: pd.DataFrame,
    load_cube: LoadCube,
    lines: Sequence[str] = PROJECT_LINES,
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
    explain: Explain | None = None,
    primary_model: str | None = None,
    n_gallery: int = 6,
    n_neighbours: int = 3,
    n_table_rows: int = 20,
    title: str = "MaNGA AGN in latent space",
) -> WrittenReport:
    """Write ``agn_report.html`` and its figures into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Folder for the page and its PNGs (created if needed); files of the same names are
        replaced, each atomically.
    umaps : mapping of model name to DataFrame
        ``plateifu``, ``umap_x``, ``umap_y`` per model ('ae', 'vae', ...).
    anomaly_scores : mapping of model name to DataFrame
        Output of :func:`~.anomaly.anomaly_scores` per model, same keys as ``umaps``.
    neighbours : mapping of model name to DataFrame
        Output of :func:`~.neighbours.latent_neighbours` per model.
    agn_sample : DataFrame
        Output of :func:`~.agn.build_agn_sample`.
    load_cube : callable
        ``load_cube(plateifu) -> (flux, ivar, mask)`` for the map galleries.
    lines : sequence of str, optional
        Line names of the cubes, :data:`~manga_assets.dap.datamodel.PROJECT_LINES` by default.
    evaluation : mapping of model name to dict of float, optional
        Output of :func:`~.evaluation.evaluate` per model (synthetic releases), shown as a table.
    explain : callable, optional
        ``explain(plateifu)``: the primary model's reconstruction of a galaxy
        (`manga_assets.model.reconstruct.reconstruct`). Given, the report shows, for the
        most anomalous AGN, the residual map of the deciding line beside its flux map.
    primary_model : str, optional
        Model whose scores pick the gallery AGN and neighbours; the first key by default.
    n_gallery : int, optional
        AGN in the gallery of the most anomalous, 6 by default.
    n_neighbours : int, optional
        Neighbours shown for each of the two most anomalous AGN, 3 by default.
    n_table_rows : int, optional
        Rows of each score table, 20 by default.
    title : str, optional
        Page title.

    Returns
    -------
    WrittenReport
        The HTML path, the figure paths and a base64 thumbnail of the UMAP figure.

    Raises
    ------
    ValueError
        If the model keys of ``umaps`` and ``anomaly_scores`` differ, or ``primary_model`` is
        not one of them.
    """
    models, primary = _models(umaps, anomaly_scores, primary_model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agn_plateifus = agn_sample.loc[agn_sample["is_agn"].astype(bool), "plateifu"].astype(str)
    figures = [plot_umap_pair(umaps, anomaly_scores, set(agn_plateifus), out_dir / UMAP_FIGURE)]
    body = _introduction(title, agn_sample, len(agn_plateifus), anomaly_scores[primary], primary)
    top_agn = most_anomalous_agn(anomaly_scores[primary], agn_sample, max(n_gallery, 2))
    if top_agn.empty:
        body.append("<p>No AGN in the sample: no AGN gallery or neighbours.</p>")
    else:
        gallery_body, gallery_figures = _agn_galleries(
            out_dir, top_agn, neighbours[primary], primary, load_cube, lines,
            n_gallery=n_gallery, n_neighbours=n_neighbours,
        )  # fmt: skip
        body += gallery_body
        figures += gallery_figures
        if explain is not None:
            explained_body, explained_figures = _explanations(
                out_dir, top_agn, primary, load_cube, lines, explain
            )
            body += explained_body
            figures += explained_figures
    body += _score_tables(
        models, anomaly_scores, neighbours, agn_sample, n_table_rows, with_agn=not top_agn.empty
    )
    body += _sample_tables(agn_sample)
    if evaluation:
        body += _evaluation_section(evaluation)
    html_path = out_dir / REPORT_NAME
    _write_text_atomically(html_path, _page(title, body))
    return WrittenReport(html_path, tuple(figures), thumbnail_base64(figures[0]))


def _models(
    umaps: Mapping[str, pd.DataFrame],
    anomaly_scores: Mapping[str, pd.DataFrame],
    primary_model: str | None,
) -> tuple[list[str], str]:
    """The models of the report and the one whose scores pick the galleries (checked)."""
    if set(umaps) != set(anomaly_scores):
        raise ValueError(
            f"umaps and anomaly_scores must cover the same models, got {sorted(umaps)} and "
            f"{sorted(anomaly_scores)}"
        )
    models = list(anomaly_scores)
    primary = primary_model if primary_model is not None else models[0]
    if primary not in anomaly_scores:
        raise ValueError(f"primary_model {primary!r} is not one of {models!r}")
    return models, primary


def _introduction(
    title: str, agn_sample: pd.DataFrame, n_agn: int, primary_scores: pd.DataFrame, primary: str
) -> list[str]:
    """The title, what the score means and how it is calibrated here, and the UMAP figure."""
    return [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. '
        f"{len(agn_sample)} galaxies, {n_agn} AGN. Anomaly score: -log10 of the "
        f"combined tail probability of {len(COMPONENTS)} components in units of the noise "
        "(the worst line's misfit against the galaxy's other lines, the galaxy's whole misfit, "
        "the peak of the PSF-smoothed residual, a line's residual summed over the footprint, "
        "the latent-space density, no detected H-alpha), each calibrated against the sample; "
        "the two smallest residual probabilities multiplied (or no H-alpha alone; in samples "
        "under 200 galaxies, too small for fitted tails, the smallest probability) and "
        "calibrated again, so that a score above 1 means a 1-in-10 galaxy and "
        "above 2 a 1-in-100 one; here "
        f"{_share_above(primary_scores, 1.0):.1%} of the galaxies score above 1 "
        f"(nominal 10%) and {_share_above(primary_scores, 2.0):.1%} above 2 "
        f"(nominal 1%; anomalies add to both) ({html.escape(primary)}). The tables "
        "name the component and line that decided; data-quality flags (e.g. a line missing over "
        "the footprint) are listed apart and not ranked. Galleries and neighbours use the "
        f"{html.escape(primary)} model.</p>",
        "<h2>Latent space</h2>",
        _figure_html(
            UMAP_FIGURE,
            "UMAP of the latent spaces",
            "UMAP of each model's latents coloured by anomaly score; AGN circled in red. Inset: "
            "anomaly-score distribution of all galaxies (grey) and AGN (red).",
        ),
    ]


def _agn_galleries(
    out_dir: Path,
    top_agn: pd.DataFrame,
    neighbours: pd.DataFrame,
    primary: str,
    load_cube: LoadCube,
    lines: Sequence[str],
    *,
    n_gallery: int,
    n_neighbours: int,
) -> tuple[list[str], list[Path]]:
    """The map galleries of the most anomalous AGN and of their latent neighbours."""
    gallery_rows = [
        GalleryRow(str(r["plateifu"]), _caption(r, primary))
        for _, r in top_agn.head(n_gallery).iterrows()
    ]
    figures = [
        plot_map_gallery(
            gallery_rows,
            load_cube,
            lines,
            out_dir / GALLERY_FIGURE,
            title=f"Most anomalous AGN ({primary})",
        )  # fmt: skip
    ]
    body = [
        "<h2>Most anomalous AGN</h2>",
        _figure_html(
            GALLERY_FIGURE,
            "Line maps of the most anomalous AGN",
            "log flux maps and the spaxel BPT classification of the most anomalous AGN.",
        ),
    ]
    neighbour_rows = _neighbour_rows(top_agn, neighbours, primary, n_neighbours)
    figures.append(
        plot_map_gallery(
            neighbour_rows,
            load_cube,
            lines,
            out_dir / NEIGHBOURS_FIGURE,
            title=f"Latent neighbours of the most anomalous AGN ({primary})",
        )  # fmt: skip
    )
    body += [
        "<h2>Latent neighbours of the two most anomalous AGN</h2>",
        _figure_html(
            NEIGHBOURS_FIGURE,
            "Latent nearest neighbours of the most anomalous AGN",
            "Each AGN followed by its nearest galaxies in the standardised latent space.",
        ),
    ]
    return body, figures


def _explanations(
    out_dir: Path,
    top_agn: pd.DataFrame,
    primary: str,
    load_cube: LoadCube,
    lines: Sequence[str],
    explain: Explain,
) -> tuple[list[str], list[Path]]:
    """Where, and in which line, the model failed for the most anomalous AGN."""
    rows = []
    for _, agn in top_agn.head(N_EXPLAINED).iterrows():
        plateifu = str(agn["plateifu"])
        try:
            flux, _, mask = load_cube(plateifu)
            explained = explain(plateifu)
        except _EXPLAIN_ERRORS as error:
            logger.warning("explanations: %s left out (%s)", plateifu, error)
            continue
        line = deciding_line(agn, explained.lines, explained.coherent_peak)
        in_cube, in_model = list(lines).index(line), list(explained.lines).index(line)
        line_flux = np.where(np.asarray(mask[in_cube]), np.nan, np.asarray(flux[in_cube]))
        rows.append(
            ExplainedRow(
                _caption(agn, primary), line, line_flux, explained.smoothed_residual[in_model]
            )
        )
    if not rows:
        return ["<p>No residual maps: the model could not be run on the AGN's cubes.</p>"], []
    path = plot_explanations(
        rows, out_dir / EXPLANATIONS_FIGURE, title=f"Why the AGN are anomalous ({primary})"
    )
    body = [
        "<h2>Why the most anomalous AGN are anomalous</h2>",
        _figure_html(
            EXPLANATIONS_FIGURE,
            "Flux and smoothed residual of each AGN's deciding line",
            "For each AGN, the flux map of the line that decided its score (or, where the "
            "latent density decided, the line whose residual peaks highest) beside the "
            "PSF-smoothed residual of that line in units of its noise: red where the galaxy "
            "is brighter than the model, blue where fainter.",
        ),
    ]
    return body, [path]


def _score_tables(
    models: Sequence[str],
    anomaly_scores: Mapping[str, pd.DataFrame],
    neighbours: Mapping[str, pd.DataFrame],
    agn_sample: pd.DataFrame,
    n_table_rows: int,
    *,
    with_agn: bool,
) -> list[str]:
    """Per model: the most anomalous galaxies and AGN, the data-quality flags, and (where there
    are AGN) the neighbours of the two most anomalous AGN."""
    body = ["<h2>Scores</h2>"]
    agn_columns = ["plateifu", "bpt_class", "is_agn", "agn_source"]
    for model in models:
        table = anomaly_scores[model].merge(agn_sample[agn_columns], on="plateifu", how="left")
        table = table.sort_values("rank", kind="stable").head(n_table_rows)
        body += [f"<h3>{html.escape(model)}: most anomalous galaxies</h3>", _table_html(table)]
        agn_table = most_anomalous_agn(anomaly_scores[model], agn_sample, n_table_rows)
        body += [f"<h3>{html.escape(model)}: most anomalous AGN</h3>", _table_html(agn_table)]
        flagged = anomaly_scores[model]
        if "quality_flags" in flagged:
            flagged = flagged.loc[flagged["quality_flags"].astype(str).str.len() > 0]
            body += [
                f"<h3>{html.escape(model)}: data-quality flags ({len(flagged)} galaxies)</h3>",
                _table_html(flagged[["plateifu", "quality_flags"]].head(n_table_rows)),
            ]
        if model in neighbours and with_agn:
            wanted = most_anomalous_agn(anomaly_scores[model], agn_sample, 2)["plateifu"]
            rows = neighbours[model].loc[neighbours[model]["plateifu"].isin(wanted)]
            body += [
                f"<h3>{html.escape(model)}: neighbours of the two most anomalous AGN</h3>",
                _table_html(rows),
            ]
    return body


def _sample_tables(agn_sample: pd.DataFrame) -> list[str]:
    """The AGN by source and the galaxies by central BPT class."""
    counts = agn_sample.loc[agn_sample["is_agn"].astype(bool), "agn_source"].value_counts()
    return [
        "<h2>AGN sample</h2>",
        _table_html(counts.rename_axis("agn_source").reset_index(name="galaxies")),
        _table_html(
            agn_sample["bpt_class"]
            .value_counts()
            .rename_axis("bpt_class")
            .reset_index(name="galaxies")
        ),  # fmt: skip
    ]


def _evaluation_section(evaluation: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The figures of :func:`~.evaluation.evaluate` per model, metric by metric."""
    metrics = pd.DataFrame(evaluation).rename_axis("metric").reset_index()
    return [
        "<h2>Evaluation against the planted truth</h2>",
        '<p class="note">anomaly_auc: all planted anomalies against the unremarkable galaxies; '
        "anomaly_auc_line_bearing: without the data-quality kinds (missing_line), which are "
        "flagged and not ranked (benchmarks/science.py reports this one).</p>",
        _table_html(metrics),
    ]


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
