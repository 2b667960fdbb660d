"""A data directory's products in memory, indexed by plate-IFU, reloaded when a file changes.

The explorer reads the catalogue, the AGN sample and, per model, the latents, UMAP, anomaly
scores and neighbours once (a survey's 10,000 galaxies take a second or two), so that a page's
JSON is a few dictionary look-ups. Every request asks `Products.snapshot`, which compares the
files' modification times (at most once per `RELOAD_CHECK_S`) and reloads them all when one has
changed: a pipeline run that republishes its tables is seen without restarting the server, and a
request always sees one consistent set of tables.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from manga_assets.analysis.anomaly import COMPONENTS
from manga_assets.layout import DataLayout
from manga_assets.review.fdr import with_fdr

VARIANTS: tuple[str, ...] = ("ae", "vae")
TABLES: tuple[str, ...] = ("latents", "umap", "anomaly_scores", "neighbours")
# How often, at most, the files' modification times are compared (seconds).
RELOAD_CHECK_S = 1.0


class NoProductsError(RuntimeError):
    """The data directory has no model's products to explore; the message says what to run."""


def json_records(table: pd.DataFrame) -> list[dict]:
    """The rows of ``table`` as JSON-safe dictionaries (NaN and infinities as None)."""
    # pandas' own JSON writer: a Python loop over 10,000 rows of 20 columns takes seconds.
    return json.loads(table.to_json(orient="records", double_precision=15))


@dataclass
class ModelProducts:
    """One model's tables (``products/<variant>/``), indexed by plate-IFU."""

    variant: str
    model_id: str
    latents: pd.DataFrame
    # anomaly_scores.parquet as written, for the review core (queue, false-discovery rates).
    anomaly_scores: pd.DataFrame
    # The same with p_value, q_value, UMAP position and BPT class, most anomalous first.
    scores: pd.DataFrame
    # plateifu -> the galaxy's score row (JSON-safe), with p_value and q_value.
    score_rows: dict[str, dict]
    # plateifu -> its neighbours, nearest first: neighbour_plateifu, neighbour_rank, distance.
    neighbours: dict[str, list[dict]]
    # plateifu -> its cube's digest (from the latents), to key the image cache.
    cube_digests: dict[str, str]
    # One row per galaxy for the home page: position, score, what decided, BPT class, q-value.
    listing: list[dict]


@dataclass
class Snapshot:
    """Every table of one load; requests read one snapshot from start to end."""

    catalog: dict[str, dict]
    bpt: dict[str, dict]
    models: dict[str, ModelProducts]
    loaded_at: float
    signature: tuple = field(repr=False, default=())

    def known(self, plateifu: str) -> bool:
        """Whether the galaxy is in the catalogue or any model's products."""
        return plateifu in self.catalog or any(
            plateifu in model.score_rows for model in self.models.values()
        )


def _model_id(layout: DataLayout, variant: str, latents: pd.DataFrame) -> str:
    if "model_id" in latents and len(latents) and str(latents["model_id"].iloc[0]):
        return str(latents["model_id"].iloc[0])
    metrics = layout.model_dir(variant) / "metrics.json"
    try:
        return str(json.loads(metrics.read_text()).get("model_id", ""))
    except (OSError, ValueError):
        return ""


def _load_model(layout: DataLayout, variant: str, bpt: dict[str, dict]) -> ModelProducts | None:
    paths = {name: layout.product(f"{variant}/{name}.parquet") for name in TABLES}
    if not all(path.exists() for path in paths.values()):
        return None
    latents = pd.read_parquet(paths["latents"])
    umap = pd.read_parquet(paths["umap"])
    anomaly_scores = pd.read_parquet(paths["anomaly_scores"])
    neighbours = pd.read_parquet(paths["neighbours"])
    # Tables written before p_value and q_value were columns of anomaly_scores get them here.
    scores = anomaly_scores if "q_value" in anomaly_scores else with_fdr(anomaly_scores)
    scores = scores.copy()
    scores = scores.merge(umap[["plateifu", "umap_x", "umap_y"]], on="plateifu", how="left")
    scores["bpt_class"] = [bpt.get(p, {}).get("bpt_class", "") for p in scores["plateifu"]]
    scores = scores.sort_values("rank").reset_index(drop=True)
    rows = json_records(scores)
    ordered = neighbours.sort_values(["plateifu", "neighbour_rank"])
    # One conversion of the whole table: per-group DataFrame work costs ms per galaxy.
    grouped: dict[str, list[dict]] = {}
    for row in json_records(
        ordered[["plateifu", "neighbour_plateifu", "neighbour_rank", "distance"]]
    ):
        grouped.setdefault(str(row.pop("plateifu")), []).append(row)
    listing_columns = [
        "plateifu", "rank", "anomaly_score", "anomaly_component", "anomaly_line", "q_value",
        "bpt_class", "umap_x", "umap_y", "quality_flags",
    ]  # fmt: skip
    digests = (
        dict(zip(latents["plateifu"].astype(str), latents["cube_digest"].astype(str), strict=True))
        if "cube_digest" in latents
        else {}
    )
    return ModelProducts(
        variant=variant,
        model_id=_model_id(layout, variant, latents),
        latents=latents,
        anomaly_scores=anomaly_scores,
        scores=scores,
        score_rows={row["plateifu"]: row for row in rows},
        neighbours=grouped,
        cube_digests=digests,
        listing=[{name: row.get(name) for name in listing_columns} for row in rows],
    )


class Products:
    """The products of one data directory, loaded once and reloaded when a file changes."""

    def __init__(self, data_dir: Path) -> None:
        self.layout = DataLayout(Path(data_dir))
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._checked_at = 0.0

    def watched(self) -> list[Path]:
        """The files whose change reloads the products."""
        files = [self.layout.product("catalog.parquet"), self.layout.product("agn_sample.parquet")]
        for variant in VARIANTS:
            files += [self.layout.product(f"{variant}/{name}.parquet") for name in TABLES]
            files.append(self.layout.model_dir(variant) / "config.json")
        return files

    def _signature(self) -> tuple:
        signature = []
        for path in self.watched():
            try:
                stat = path.stat()  # follows the published model's symbolic link
                signature.append((str(path.resolve()), stat.st_mtime_ns, stat.st_size))
            except OSError:
                signature.append((str(path), None, None))
        return tuple(signature)

    def _load(self, signature: tuple) -> Snapshot:
        catalog_path = self.layout.product("catalog.parquet")
        catalog = pd.read_parquet(catalog_path) if catalog_path.exists() else pd.DataFrame()
        agn_path = self.layout.product("agn_sample.parquet")
        agn = pd.read_parquet(agn_path) if agn_path.exists() else pd.DataFrame()
        catalog_rows = {row["plateifu"]: row for row in json_records(catalog)}
        bpt_rows = {row["plateifu"]: row for row in json_records(agn)}
        models = {}
        for variant in VARIANTS:
            loaded = _load_model(self.layout, variant, bpt_rows)
            if loaded is not None:
                models[variant] = loaded
        if not models:
            raise NoProductsError(
                f"{self.layout.products} has no model's products (<variant>/latents.parquet, "
                f"umap, anomaly_scores and neighbours for ae or vae); run `manga-assets run "
                f"--data-dir {self.layout.data_dir}` (or `manga-assets demo`) first"
            )
        return Snapshot(catalog_rows, bpt_rows, models, time.time(), signature)

    def snapshot(self) -> Snapshot:
        """The current tables, reloaded first if a product file changed since the last load."""
        with self._lock:
            now = time.monotonic()
            if self._snapshot is not None and now - self._checked_at < RELOAD_CHECK_S:
                return self._snapshot
            self._checked_at = now
            signature = self._signature()
            if self._snapshot is None or signature != self._snapshot.signature:
                self._snapshot = self._load(signature)
            return self._snapshot


def component_rows(score_row: dict) -> list[dict]:
    """A galaxy's components: name, value and calibrated tail probability, rarest first."""
    rows = [
        {"component": name, "value": score_row.get(name), "p": score_row.get(f"p_{name}")}
        for name in COMPONENTS
        if name in score_row
    ]
    return sorted(rows, key=lambda row: 2.0 if row["p"] is None else row["p"])
