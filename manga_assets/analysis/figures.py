"""The report's figures, written as PNG files.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas attached inside each
function, never through ``pyplot``: no global backend is switched at import, nothing is kept in
pyplot's figure registry (no leak across thousands of calls), and drawing is safe in any thread.
Files are written under a temporary name and renamed, so a half-written PNG is never published.

Cubes come from a ``load_cube(plateifu) -> (flux, ivar, mask)`` callable, so the figures need
neither Dagster nor a particular storage layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from manga_assets.analysis.bpt import BPT_CLASSES, classify_spaxels
from manga_assets.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

LoadCube = Callable[[str], tuple[np.ndarray, np.ndarray, np.ndarray]]

# The maps shown per galaxy (DAP name, label), as in the reference study's figures.
GALLERY_LINES: tuple[tuple[str, str], ...] = (
    ("Ha-6564", r"H$\alpha$"),
    ("Hb-4862", r"H$\beta$"),
    ("OIII-5008", "[OIII]5008"),
    ("NII-6585", "[NII]6585"),
    ("SII-6718", "[SII]6718"),
)

# One colour per BPT class, in BPT_CLASSES order.
BPT_COLOURS: tuple[str, ...] = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#e6e6e6")

# Problems with one galaxy's cube that should blank its row, not abort the whole figure.
_CUBE_ERRORS = (OSError, KeyError, ValueError)


@dataclass(frozen=True)
class GalleryRow:
    """One galaxy of a map gallery: its plate-IFU and the caption shown beside its maps."""

    plateifu: str
    caption: str


def new_figure(width: float, height: float) -> Figure:
    """A figure with an Agg canvas, independent of pyplot and of the global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def loss_curve_png(history: pd.DataFrame) -> bytes:
    """A training's chi-square per epoch (train and validation) as PNG bytes.

    ``history`` has ``epoch``, ``train_chi2`` and ``val_chi2`` columns (`TrainResult.history`).
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.0, 2.6), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for column, label in (("train_chi2", "train"), ("val_chi2", "validation")):
        axes.plot(history["epoch"], history[column], marker="o", markersize=3, label=label)
    axes.axhline(1.0, color="grey", linestyle=":", label="noise")
    axes.set_xlabel("epoch")
    axes.set_ylabel("chi-square per valid pixel")
    axes.set_yscale("log")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` as PNG to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path


# Anomaly scores are -log10 of a tail probability: the colour scale and histograms reach at least
# 3 (a 1-in-1000 galaxy), further when a galaxy scores higher.
MIN_SCORE_AXIS_TOP = 3.0


def score_axis_top(scores: Mapping[str, pd.DataFrame]) -> float:
    """The top of the anomaly-score axis shared by every panel: the highest score, rounded up,
    and at least `MIN_SCORE_AXIS_TOP`."""
    highest = max((float(np.nanmax(t["anomaly_score"])) for t in scores.values() if len(t)),
                  default=0.0)  # fmt: skip
    return max(MIN_SCORE_AXIS_TOP, float(np.ceil(np.nan_to_num(highest))))


def _anomaly_histogram_inset(
    axes: Axes, scores: np.ndarray, agn_scores: np.ndarray, top: float
) -> None:
    inset = axes.inset_axes((0.6, 0.64, 0.37, 0.33))
    bins = np.linspace(0, top, 21)
    inset.hist(scores, bins=bins, density=True, color="0.6", label="all")
    if len(agn_scores):
        inset.hist(agn_scores, bins=bins, density=True, histtype="step", color="red", lw=1.5,
                   label="AGN")  # fmt: skip
    inset.set_xlabel("anomaly score", fontsize=7)
    inset.set_yticks([])
    inset.tick_params(labelsize=6)
    inset.legend(fontsize=6, frameon=False, loc="upper left")


def plot_umap_pair(
    umaps: Mapping[str, pd.DataFrame],
    anomaly_scores: Mapping[str, pd.DataFrame],
    agn_plateifus: Collection[str],
    path: Path,
) -> Path:
    """UMAP of each model side by side, coloured by anomaly score, AGN circled.

    Each panel has an inset histogram of anomaly scores for all galaxies and for AGN.

    Parameters
    ----------
    umaps : mapping of model name to DataFrame
        ``plateifu``, ``umap_x``, ``umap_y`` per model (e.g. 'ae', 'vae').
    anomaly_scores : mapping of model name to DataFrame
        ``plateifu``, ``anomaly_score`` per model, same keys as ``umaps``.
    agn_plateifus : collection of str
        The AGN, marked on every panel.
    path : Path
        Where the PNG goes.

    Returns
    -------
    Path
        ``path``.
    """
    models = list(umaps)
    figure = new_figure(5.2 * len(models), 4.6)
    panels = figure.subplots(1, len(models), squeeze=False)[0]
    agn = set(map(str, agn_plateifus))
    scatter = None
    top = score_axis_top(anomaly_scores)
    for axes, model in zip(panels, models, strict=True):
        table = umaps[model].merge(
            anomaly_scores[model][["plateifu", "anomaly_score"]], on="plateifu", how="left"
        )
        is_agn = table["plateifu"].astype(str).isin(agn).to_numpy()
        scatter = axes.scatter(table["umap_x"], table["umap_y"], c=table["anomaly_score"],
                               cmap="viridis", vmin=0, vmax=top, s=8, lw=0)  # fmt: skip
        axes.scatter(table["umap_x"][is_agn], table["umap_y"][is_agn], s=40, facecolors="none",
                     edgecolors="red", lw=1.0, label=f"AGN ({is_agn.sum()})")  # fmt: skip
        axes.set_title(f"{model}: {len(table)} galaxies")
        axes.set_xlabel("UMAP 1")
        axes.set_ylabel("UMAP 2")
        axes.legend(loc="lower left", fontsize=8)
        scores = table["anomaly_score"].dropna().to_numpy()
        agn_scores = table["anomaly_score"][is_agn].dropna().to_numpy()
        _anomaly_histogram_inset(axes, scores, agn_scores, top)
    if scatter is not None:
        figure.colorbar(scatter, ax=list(panels), label="anomaly score (higher = more anomalous)")
    return save_figure(figure, path)


def _log_flux_map(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log10 of a line map, NaN where invalid or not positive (drawn as the 'bad' colour)."""
    shown = np.full(flux.shape, np.nan)
    good = ~mask & (flux > 0) & np.isfinite(flux)
    shown[good] = np.log10(flux[good])
    return shown


def _draw_line_map(axes: Axes, image: np.ndarray, label: str) -> None:
    from matplotlib import colormaps

    finite = image[np.isfinite(image)]
    limits = np.percentile(finite, (2, 99.5)) if finite.size else (0.0, 1.0)
    cmap = colormaps["inferno"].with_extremes(bad="0.85")
    axes.imshow(image, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
    axes.set_title(label, fontsize=8)


def _draw_bpt_map(axes: Axes, codes: np.ndarray) -> None:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(BPT_COLOURS)
    norm = BoundaryNorm(np.arange(len(BPT_CLASSES) + 1) - 0.5, cmap.N)
    axes.imshow(codes, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    axes.set_title("BPT (Kewley 2006)", fontsize=8)


def plot_map_gallery(
    galaxies: Sequence[GalleryRow],
    load_cube: LoadCube,
    lines: Sequence[str],
    path: Path,
    *,
    title: str = "",
    snr_min: float = 3.0,
) -> Path:
    """One row per galaxy: log flux maps of Ha, Hb, [OIII]5008, [NII]6585, [SII]6718 and the
    spatially resolved BPT class map.

    Parameters
    ----------
    galaxies : sequence of GalleryRow
        The rows, top to bottom; each caption is written at the left of its row (scores, ranks).
    load_cube : callable
        ``load_cube(plateifu) -> (flux, ivar, mask)``, arrays (L, H, W) as in the cube contract.
        A cube that raises ``OSError``, ``KeyError`` or ``ValueError`` blanks its row (logged).
    lines : sequence of str
        The L line names of the cubes.
    path : Path
        Where the PNG goes.
    title : str, optional
        Figure title.
    snr_min : float, optional
        S/N threshold of the BPT map, 3 by default.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``galaxies`` is empty or a gallery line is not in ``lines``.
    """
    from matplotlib.patches import Patch

    if not galaxies:
        raise ValueError("a map gallery needs at least one galaxy")
    index = {str(name): i for i, name in enumerate(lines)}
    missing = [name for name, _ in GALLERY_LINES if name not in index]
    if missing:
        raise ValueError(f"gallery lines {missing!r} are not in the cube lines {list(lines)!r}")

    n_columns = len(GALLERY_LINES) + 1
    figure = new_figure(1.7 * n_columns + 1.6, 1.75 * len(galaxies) + 0.6)
    grid = figure.subplots(len(galaxies), n_columns, squeeze=False)
    for row, galaxy in zip(grid, galaxies, strict=True):
        for axes in row:
            axes.set_xticks([])
            axes.set_yticks([])
        row[0].set_ylabel(galaxy.caption, fontsize=7, rotation=0, ha="right", va="center")
        try:
            flux, ivar, mask = (np.asarray(a) for a in load_cube(galaxy.plateifu))
        except _CUBE_ERRORS as error:
            logger.warning("gallery: no cube for %s (%s)", galaxy.plateifu, error)
            row[len(row) // 2].text(0.5, 0.5, "cube unavailable", ha="center", va="center",
                                    transform=row[len(row) // 2].transAxes)  # fmt: skip
            continue
        for axes, (name, label) in zip(row, GALLERY_LINES, strict=False):
            _draw_line_map(axes, _log_flux_map(flux[index[name]], mask[index[name]]), label)
        _draw_bpt_map(row[-1], classify_spaxels(flux, ivar, mask, lines, snr_min=snr_min))
    handles = [Patch(color=c, label=n) for c, n in zip(BPT_COLOURS, BPT_CLASSES, strict=True)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


@dataclass(frozen=True)
class ExplainedRow:
    """One galaxy of the explanations figure: where, in its deciding line, the model failed.

    ``flux`` is the line's map (1E-17 erg/s/cm^2/spaxel, NaN where invalid); ``residual`` the
    PSF-smoothed residual significance of the same line (signed, in units of its noise).
    """

    caption: str
    line: str
    flux: np.ndarray
    residual: np.ndarray


# Residual significances beyond this saturate the colour scale.
RESIDUAL_COLOUR_LIMIT = 5.0


def plot_explanations(rows: Sequence[ExplainedRow], path: Path, *, title: str = "") -> Path:
    """One row per galaxy: the log flux map of its deciding line beside the PSF-smoothed
    residual of that line (red: brighter than the model, blue: fainter), saturating at
    +-`RESIDUAL_COLOUR_LIMIT` sigma.

    Raises
    ------
    ValueError
        If ``rows`` is empty.
    """
    from matplotlib import colormaps

    if not rows:
        raise ValueError("an explanations figure needs at least one galaxy")
    figure = new_figure(6.4, 2.1 * len(rows) + 0.5)
    grid = figure.subplots(len(rows), 2, squeeze=False)
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    for (flux_axes, residual_axes), row in zip(grid, rows, strict=True):
        for axes in (flux_axes, residual_axes):
            axes.set_xticks([])
            axes.set_yticks([])
        invalid = ~np.isfinite(row.flux)
        _draw_line_map(flux_axes, _log_flux_map(np.nan_to_num(row.flux), invalid), row.line)
        flux_axes.set_ylabel(row.caption, fontsize=7, rotation=0, ha="right", va="center")
        image = residual_axes.imshow(
            row.residual, origin="lower", cmap=cmap,
            vmin=-RESIDUAL_COLOUR_LIMIT, vmax=RESIDUAL_COLOUR_LIMIT,
        )  # fmt: skip
        peak = np.nanmax(np.abs(row.residual), initial=0.0)
        residual_axes.set_title(f"smoothed residual, peak {peak:.1f} sigma", fontsize=8)
        figure.colorbar(image, ax=residual_axes, shrink=0.8, label="sigma")
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
