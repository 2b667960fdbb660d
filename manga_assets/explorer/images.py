"""A galaxy's maps as PNG files, rendered once (matplotlib, Agg) and cached under the data dir.

Kinds, each one figure:

- ``lines``: the log flux maps of all lines;
- ``reconstruction``: the published model's reconstruction, on the same colour scale per line;
- ``residual``: (data - model) in units of the noise (and the model's own floor), per pixel;
- ``smoothed``: the PSF-smoothed residual significance per line, the statistic whose peak is
  the ``coherent_residual`` score: where, and in which line, the galaxy departs (the line that
  decided the score is titled in red);
- ``bpt``: the spaxels' BPT classes;
- ``thumb``: a small H-alpha map, for neighbour thumbnails.

Files live in ``products/explorer_cache/<model_id>/<plateifu>/<kind>-<cube digest>.png`` (the
data-only kinds under ``explorer_cache/data/``): a retrained model or a re-extracted cube gets
new files, never a stale picture.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from manga_assets.analysis.bpt import BPT_CLASSES, classify_spaxels
from manga_assets.analysis.figures import BPT_COLOURS, save_figure
from manga_assets.layout import DataLayout
from manga_assets.model.reconstruct import Reconstruction, load_published_model, reconstruct
from manga_assets.sas.paths import PlateIFU

MODEL_KINDS: tuple[str, ...] = ("reconstruction", "residual", "smoothed")
DATA_KINDS: tuple[str, ...] = ("lines", "bpt", "thumb")
KINDS: tuple[str, ...] = DATA_KINDS[:1] + MODEL_KINDS + DATA_KINDS[1:]
CACHE_DIR = "explorer_cache"
# Residual colour scale, in units of the noise: +-5 sigma saturates.
RESIDUAL_LIMIT = 5.0
COLUMNS = 5
PANEL_INCHES = 1.45
DPI = 72
# Reconstructions kept in memory: a page's three model images share one.
RECONSTRUCTIONS_KEPT = 32
HA_LINE = "Ha-6564"


class ImageError(LookupError):
    """A galaxy has no cube or an unknown image kind was asked for; the message says which."""


def _short(line: str) -> str:
    return line.replace("-", " ")


def _mosaic_figure(tiles: np.ndarray, labels, title: str, highlighted: int | None = None):
    """One image of all lines' maps (``tiles``: (L, H, W, 4) RGBA), ``COLUMNS`` per row, each
    titled with its label (tile ``highlighted`` in red). One axes and one image: 19 axes cost
    several times as much to draw, and the page's images must render in well under a second."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, height, width = tiles.shape[:3]
    rows = -(-n // COLUMNS)
    gap, label = max(1, width // 8), max(4, height // 4)
    cell_h, cell_w = height + gap + label, width + gap
    canvas = np.ones((rows * cell_h, COLUMNS * cell_w, 4))
    figure = Figure(figsize=(COLUMNS * PANEL_INCHES, rows * PANEL_INCHES * cell_h / cell_w + 0.3))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.3 / figure.get_figheight()))
    for index in range(n):
        row, column = divmod(index, COLUMNS)
        top, left = row * cell_h + label, column * cell_w
        # Maps have the origin at the bottom (north up): flip rows into the image's order.
        canvas[top : top + height, left : left + width] = tiles[index][::-1]
        decided = index == highlighted
        axes.text(
            left + width / 2, top - 1, labels[index], ha="center", va="bottom", fontsize=7,
            color="#c00000" if decided else "black",
            fontweight="bold" if decided else "normal",
        )  # fmt: skip
    axes.imshow(canvas, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    figure.suptitle(title, fontsize=9, y=0.995, va="top")
    return figure


def _coloured(image: np.ndarray, low: float, high: float, cmap) -> np.ndarray:
    """RGBA of a map on the scale [low, high]; NaN in the colour map's 'bad' colour."""
    with np.errstate(invalid="ignore"):
        scaled = (image - low) / (high - low)
    return cmap(np.ma.masked_invalid(scaled))


def _log_map(flux: np.ndarray, shown: np.ndarray) -> np.ndarray:
    image = np.full(flux.shape, np.nan)
    good = shown & (flux > 0) & np.isfinite(flux)
    image[good] = np.log10(flux[good])
    return image


def _limits(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, (2, 99.5))
    return float(low), float(max(high, low + 1e-3))


def draw_line_maps(
    flux: np.ndarray, valid: np.ndarray, lines, title: str, limits_from: np.ndarray | None = None
):
    """log10 flux maps, one tile per line; colour limits per line from ``limits_from``
    (the data, so that a reconstruction is drawn on the data's scale) or the maps themselves."""
    from matplotlib import colormaps

    cmap = colormaps["inferno"].with_extremes(bad="0.85")
    reference = flux if limits_from is None else limits_from
    tiles = np.stack(
        [
            _coloured(
                _log_map(flux[index], valid[index]),
                *_limits(_log_map(reference[index], valid[index])),
                cmap,
            )
            for index in range(len(lines))
        ]
    )
    return _mosaic_figure(tiles, [_short(line) for line in lines], title)


def draw_residual_maps(maps: np.ndarray, lines, title: str, highlight: str = "", peaks=None):
    """Signed maps in units of the noise (blue: data fainter than the model, red: brighter),
    saturating at +-`RESIDUAL_LIMIT`; ``peaks`` (one per line) join the titles."""
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    tiles = np.stack([_coloured(m, -RESIDUAL_LIMIT, RESIDUAL_LIMIT, cmap) for m in maps])
    labels = [
        _short(line) if peaks is None else f"{_short(line)}  {peaks[index]:.1f}"
        for index, line in enumerate(lines)
    ]
    lines = list(lines)
    return _mosaic_figure(
        tiles, labels, title, lines.index(highlight) if highlight in lines else None
    )


def draw_bpt_map(codes: np.ndarray, title: str):
    """The spaxels' BPT classes with a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(3.6, 3.0))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.04, 0.6, 0.84))
    cmap = ListedColormap(BPT_COLOURS)
    norm = BoundaryNorm(np.arange(len(BPT_CLASSES) + 1) - 0.5, cmap.N)
    axes.imshow(codes, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=8)
    handles = [Patch(color=c, label=n) for c, n in zip(BPT_COLOURS, BPT_CLASSES, strict=True)]
    figure.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    return figure


def draw_thumbnail(flux: np.ndarray, valid: np.ndarray):
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.2, 1.2))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    image = _log_map(flux, valid)
    low, high = _limits(image)
    cmap = colormaps["inferno"].with_extremes(bad="0.85")
    axes.imshow(image, origin="lower", cmap=cmap, vmin=low, vmax=high)
    axes.set_axis_off()
    return figure


class GalaxyImages:
    """Renders and caches the PNG files of galaxies (thread-safe: one render per file)."""

    def __init__(self, layout: DataLayout) -> None:
        self.layout = layout
        self.cache = layout.products / CACHE_DIR
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._models: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._reconstructions: OrderedDict[tuple, Reconstruction] = OrderedDict()
        self._memory_lock = threading.Lock()

    def cube_path(self, plateifu: str) -> Path:
        return self.layout.cube(PlateIFU.parse(plateifu))

    def _cube_key(self, plateifu: str, digest: str) -> str:
        if digest:
            return digest[:12]
        # No digest in the latents (older tables): the file's size and time stand in.
        stat = self.cube_path(plateifu).stat()
        return f"{stat.st_size:x}{stat.st_mtime_ns:x}"[-12:]

    def path(self, kind: str, plateifu: str, model_id: str, digest: str) -> Path:
        """Where the image lives in the cache (whether rendered yet or not)."""
        if kind not in KINDS:
            raise ImageError(f"unknown image kind {kind!r}; one of {', '.join(KINDS)}")
        owner = "data" if kind in DATA_KINDS else (model_id or "unidentified-model")
        return self.cache / owner / plateifu / f"{kind}-{self._cube_key(plateifu, digest)}.png"

    def _read_cube(self, plateifu: str):
        from manga_assets.cubes.extract import read_cube

        path = self.cube_path(plateifu)
        if not path.exists():
            raise ImageError(
                f"no cube for {plateifu} at {path}; run `manga-assets run` to extract it"
            )
        return read_cube(path)

    def _model(self, variant: str):
        model_dir = self.layout.model_dir(variant).resolve()
        key = (variant, str(model_dir))
        with self._memory_lock:
            if key not in self._models:
                self._models[key] = load_published_model(model_dir)
            return self._models[key]

    def reconstruction(self, variant: str, plateifu: str, model_id: str) -> Reconstruction:
        """The published model's reconstruction of a galaxy (kept for the next few requests)."""
        from manga_assets.model.dataset import read_cube

        key = (variant, model_id, plateifu)
        with self._memory_lock:
            if key in self._reconstructions:
                self._reconstructions.move_to_end(key)
                return self._reconstructions[key]
        model, config = self._model(variant)
        path = self.cube_path(plateifu)
        if not path.exists():
            raise ImageError(f"no cube for {plateifu} at {path}; run `manga-assets run` first")
        flux, ivar, mask = read_cube(path, plateifu, line_names=config.line_names, grid=config.grid)
        result = reconstruct(model, config, flux, ivar, mask)
        with self._memory_lock:
            self._reconstructions[key] = result
            while len(self._reconstructions) > RECONSTRUCTIONS_KEPT:
                self._reconstructions.popitem(last=False)
        return result

    def _lock_for(self, path: Path) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(path, threading.Lock())

    def get(
        self, kind: str, variant: str, plateifu: str, model_id: str, digest: str = "",
        deciding_line: str = "",
    ) -> Path:  # fmt: skip
        """The image file, rendered now if it is not in the cache yet."""
        path = self.path(kind, plateifu, model_id, digest)
        if path.exists():
            return path
        with self._lock_for(path):
            if not path.exists():
                figure = self._draw(kind, variant, plateifu, model_id, deciding_line)
                save_figure(figure, path, dpi=DPI)
        return path

    def _draw(self, kind: str, variant: str, plateifu: str, model_id: str, deciding_line: str):
        if kind in DATA_KINDS:
            cube = self._read_cube(plateifu)
            valid = ~np.asarray(cube.mask, dtype=bool)
            if kind == "lines":
                return draw_line_maps(cube.flux, valid, cube.lines, f"{plateifu}: log flux")
            if kind == "bpt":
                codes = classify_spaxels(cube.flux, cube.ivar, cube.mask, cube.lines)
                return draw_bpt_map(codes, f"{plateifu}: BPT (Kewley 2006)")
            index = cube.lines.index(HA_LINE) if HA_LINE in cube.lines else 0
            return draw_thumbnail(cube.flux[index], valid[index])
        result = self.reconstruction(variant, plateifu, model_id)
        if kind == "reconstruction":
            cube = self._read_cube(plateifu)
            return draw_line_maps(
                result.model_flux, result.valid, result.lines,
                f"{plateifu}: {variant} reconstruction (log flux, the data's scale)",
                limits_from=np.asarray(cube.flux, dtype=np.float64),
            )  # fmt: skip
        if kind == "residual":
            return draw_residual_maps(
                result.residual, result.lines,
                f"{plateifu}: (data - {variant} model) / noise, per pixel",
            )  # fmt: skip
        return draw_residual_maps(
            result.smoothed_residual, result.lines,
            f"{plateifu}: PSF-smoothed residual significance ({variant}); peak per line",
            highlight=deciding_line, peaks=result.coherent_peak,
        )  # fmt: skip
