"""The explorer's HTTP server (standard library ``ThreadingHTTPServer``): pages, JSON, images.

Pages: ``/`` (UMAP and ranked list), ``/galaxy/{plateifu}`` (maps, residuals, scores,
neighbours, labelling form), ``/static/...`` (the scripts and styles shipped in the package).
JSON (lists are arrays of objects that each carry ``plateifu``):

- ``GET /api/galaxy/{plateifu}?model=ae``: scores, p- and q-value, components, neighbours,
  image URLs, this galaxy's labels;
- ``GET /api/galaxies?model=ae``: every galaxy's listing row (UMAP position, score, BPT class);
- ``GET /api/queue?model=ae&n=20``: the reviewer's next galaxies, labelled ones left out;
- ``GET /api/anomalies?model=ae&fdr=0.1``: the galaxies passing Benjamini-Hochberg at that rate;
- ``GET /api/labels`` and ``POST /api/labels`` with ``{"plateifu", "label", "note"}``;
- ``GET /api/info``: the models, the reviewer, the label and component names.

Errors are JSON ``{"error": message}`` with a 4xx status; an unknown galaxy is 404.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from manga_assets.analysis.anomaly import COMPONENTS
from manga_assets.analysis.bpt import BPT_CLASSES
from manga_assets.explorer.images import KINDS, GalaxyImages, ImageError
from manga_assets.explorer.products import (
    Products,
    Snapshot,
    component_rows,
    json_records,
)
from manga_assets.review.fdr import passing
from manga_assets.review.labels import (
    LABELS,
    LabelError,
    LabelStore,
    default_reviewer,
    labels_path,
    validate_plateifu,
)
from manga_assets.review.queue import rank_queue, review_space

logger = logging.getLogger(__name__)

STATIC = resources.files("manga_assets.explorer") / "static"
MAX_BODY_BYTES = 64 * 1024
MAX_QUEUE = 1000
IMAGE_MAX_AGE_S = 86_400
_PLATEIFU = r"[0-9]{4,5}-[0-9]{3,5}"


class HttpError(Exception):
    """A request that gets a 4xx answer with ``message``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Explorer:
    """What the handlers share: the products, the image cache, the label store, the reviewer."""

    def __init__(self, data_dir: Path, reviewer: str | None = None) -> None:
        self.products = Products(data_dir)
        self.images = GalaxyImages(self.products.layout)
        self.labels = LabelStore(labels_path(Path(data_dir)))
        self.reviewer = reviewer or default_reviewer()
        self._spaces: dict[tuple, Any] = {}
        self._queues: dict[tuple, Any] = {}
        self._queue_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def model(self, snapshot: Snapshot, query: dict[str, list[str]]):
        available = list(snapshot.models)
        name = (query.get("model") or [available[0]])[0]
        if name not in snapshot.models:
            raise HttpError(
                HTTPStatus.NOT_FOUND,
                f"no products for model {name!r} in {self.products.layout.products}; "
                f"available: {', '.join(available)}",
            )
        return snapshot.models[name]

    def image_url(self, model, plateifu: str, kind: str) -> str:
        version = f"{model.model_id[:12]}.{model.cube_digests.get(plateifu, '')[:12]}"
        return f"/images/{model.variant}/{plateifu}/{kind}.png?v={version}"

    def queue(self, snapshot: Snapshot, model):
        """The learned queue for this server's reviewer, ranked again when labels change.

        The review space (whitened latents and score features) depends only on the products,
        so it is built once per load; ranking it against new labels takes milliseconds.
        """
        space_key = (model.variant, snapshot.loaded_at)
        key = (*space_key, self.labels.version(), self.reviewer)
        with self._queue_lock:
            if space_key not in self._spaces:
                current = {k: v for k, v in self._spaces.items() if k[1] == snapshot.loaded_at}
                space = review_space(model.latents, model.anomaly_scores)
                self._spaces = {**current, space_key: space}
            if key not in self._queues:
                labels = self.labels.current(self.reviewer)
                current = {k: v for k, v in self._queues.items() if k[:2] != space_key}
                self._queues = {**current, key: rank_queue(self._spaces[space_key], labels)}
            return self._queues[key]

    # -- JSON ------------------------------------------------------------------------------------

    def galaxy(self, snapshot: Snapshot, plateifu: str, query) -> dict:
        model = self.model(snapshot, query)
        row = model.score_rows.get(plateifu)
        if row is None:
            raise HttpError(
                HTTPStatus.NOT_FOUND,
                f"galaxy {plateifu} is not in the {model.variant} products "
                f"({len(model.score_rows)} galaxies); check the plate-IFU",
            )
        labels = self.labels.table()
        mine = labels[labels["plateifu"] == plateifu]
        return {
            "plateifu": plateifu,
            "model": model.variant,
            "model_id": model.model_id,
            "models": list(snapshot.models),
            "reviewer": self.reviewer,
            "catalog": snapshot.catalog.get(plateifu, {}),
            "bpt": snapshot.bpt.get(plateifu, {}),
            "scores": row,
            "p_value": row["p_value"],
            "q_value": row["q_value"],
            "components": component_rows(row),
            "quality_flags": [
                flag for flag in str(row.get("quality_flags") or "").split(";") if flag
            ],
            "neighbours": [
                {
                    "plateifu": n["neighbour_plateifu"],
                    "rank": n["neighbour_rank"],
                    "distance": n["distance"],
                    "anomaly_score": model.score_rows.get(n["neighbour_plateifu"], {}).get(
                        "anomaly_score"
                    ),
                    "thumbnail": self.image_url(model, n["neighbour_plateifu"], "thumb"),
                }
                for n in model.neighbours.get(plateifu, [])
            ],
            "images": {kind: self.image_url(model, plateifu, kind) for kind in KINDS},
            "labels": json_records(mine),
        }

    def post_label(self, snapshot: Snapshot, body: dict, query) -> dict:
        if not isinstance(body, dict):
            raise HttpError(
                HTTPStatus.BAD_REQUEST, 'send a JSON object {"plateifu", "label", "note"}'
            )
        try:
            plateifu = validate_plateifu(body.get("plateifu"))
        except LabelError:
            raise HttpError(
                HTTPStatus.BAD_REQUEST,
                f"plateifu {body.get('plateifu')!r} is not a MaNGA plate-IFU (e.g. '8485-1901'); "
                "nothing stored",
            ) from None
        if not snapshot.known(plateifu):
            raise HttpError(
                HTTPStatus.NOT_FOUND,
                f"galaxy {plateifu} is not in the catalogue or the products of "
                f"{self.products.layout.data_dir}; nothing stored",
            )
        name = body.get("model") or (query.get("model") or [None])[0]
        model = self.model(snapshot, {"model": [name]} if name else {})
        row = model.score_rows.get(plateifu, {})
        try:
            return self.labels.add(
                plateifu, body.get("label"), body.get("note", ""), self.reviewer,
                model.variant, model.model_id,
                row.get("anomaly_score"),
            )  # fmt: skip
        except LabelError as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"{error}; nothing stored") from error

    def info(self, snapshot: Snapshot) -> dict:
        return {
            "models": {
                name: {"model_id": model.model_id, "galaxies": len(model.score_rows)}
                for name, model in snapshot.models.items()
            },
            "reviewer": self.reviewer,
            "labels": list(LABELS),
            "components": list(COMPONENTS),
            "bpt_classes": list(BPT_CLASSES),
        }


def _number(query, name: str, default: float, low: float, high: float, kind=float):
    text = (query.get(name) or [None])[0]
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name}={text} must lie in [{low}, {high}]")
    return value


class ExplorerHandler(BaseHTTPRequestHandler):
    """The explorer's HTTP requests; `make_handler` binds a subclass to one `Explorer`."""

    explorer: Explorer
    protocol_version = "HTTP/1.1"
    server_version = "manga-assets-explore"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        body = json.dumps(value, allow_nan=False).encode()
        self._send(status, body, "application/json", {"Cache-Control": "no-store"})

    def _static(self, name: str, content_type: str | None = None) -> None:
        resource = STATIC / name
        if "/" in name or name.startswith(".") or not resource.is_file():
            raise HttpError(HTTPStatus.NOT_FOUND, f"no static file {name!r}")
        kind = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(200, resource.read_bytes(), kind, {"Cache-Control": "no-cache"})

    def _image(self, snapshot: Snapshot, variant: str, plateifu: str, kind: str) -> None:
        model = self.explorer.model(snapshot, {"model": [variant]})
        row = model.score_rows.get(plateifu)
        if row is None and kind != "thumb":
            raise HttpError(HTTPStatus.NOT_FOUND, f"galaxy {plateifu} is not in {variant}")
        try:
            path = self.explorer.images.get(
                kind, variant, plateifu, model.model_id, model.cube_digests.get(plateifu, ""),
                (row or {}).get("anomaly_line") or "",
            )  # fmt: skip
        except ImageError as error:
            raise HttpError(HTTPStatus.NOT_FOUND, str(error)) from error
        etag = f'"{path.parent.parent.name}-{path.name}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {"Cache-Control": f"public, max-age={IMAGE_MAX_AGE_S}", "ETag": etag}
        self._send(200, path.read_bytes(), "image/png", headers)

    def _route_get(self, path: str, query) -> None:
        if path in ("/", "/index.html"):
            return self._static("index.html", "text/html; charset=utf-8")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        snapshot = self.explorer.products.snapshot()
        if match := re.fullmatch(rf"/galaxy/({_PLATEIFU})", path):
            if not snapshot.known(match[1]):
                raise HttpError(HTTPStatus.NOT_FOUND, f"galaxy {match[1]} is not known here")
            return self._static("galaxy.html", "text/html; charset=utf-8")
        if match := re.fullmatch(rf"/images/(\w+)/({_PLATEIFU})/(\w+)\.png", path):
            return self._image(snapshot, match[1], match[2], match[3])
        if path.startswith("/api/"):
            return self._route_api(snapshot, path, query)
        raise HttpError(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _route_api(self, snapshot: Snapshot, path: str, query) -> None:
        explorer = self.explorer
        if match := re.fullmatch(r"/api/galaxy/([^/]+)", path):
            return self._json(explorer.galaxy(snapshot, match[1], query))
        if path == "/api/galaxies":
            return self._json(explorer.model(snapshot, query).listing)
        if path == "/api/queue":
            n = _number(query, "n", 20, 1, MAX_QUEUE, int)
            queue = explorer.queue(snapshot, explorer.model(snapshot, query))
            return self._json(json_records(queue.head(n)))
        if path == "/api/anomalies":
            fdr = _number(query, "fdr", 0.1, 0.0, 1.0)
            model = explorer.model(snapshot, query)
            found = passing(model.scores, fdr)
            return self._json(json_records(found))
        if path == "/api/labels":
            table = explorer.labels.table()
            if reviewer := (query.get("reviewer") or [None])[0]:
                table = table[table["reviewer"] == reviewer]
            return self._json(json_records(table))
        if path == "/api/info":
            return self._json(explorer.info(snapshot))
        raise HttpError(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _handle(self, route: Callable[[str, dict], None]) -> None:
        parts = urlsplit(self.path)
        try:
            route(unquote(parts.path), parse_qs(parts.query))
        except HttpError as error:
            self._json({"error": error.message}, error.status)
        except Exception as error:  # the server stays up; the client learns what failed
            logger.exception("explorer: %s %s failed", self.command, self.path)
            self._json({"error": f"{type(error).__name__}: {error}"}, 500)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self._handle(self._route_get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(self._route_get)

    def _route_post(self, path: str, query) -> None:
        if path != "/api/labels":
            raise HttpError(HTTPStatus.NOT_FOUND, f"nothing to POST at {path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "label body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        row = self.explorer.post_label(self.explorer.products.snapshot(), body, query)
        self._json(row, HTTPStatus.CREATED)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._route_post)


def make_handler(explorer: Explorer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``explorer``."""
    return type("Handler", (ExplorerHandler,), {"explorer": explorer})


def warm_up(explorer: Explorer) -> None:
    """Import matplotlib and torch and load the models, so the first page is not slow."""
    snapshot = explorer.products.snapshot()
    for variant, model in snapshot.models.items():
        first = next(iter(model.score_rows), None)
        if first:
            try:
                explorer.images.reconstruction(variant, first, model.model_id)
            except Exception:  # a missing cube or model shows on its page; warming is optional
                logger.warning("explorer: could not warm up %s", variant, exc_info=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401


def make_server(
    data_dir: Path, host: str = "127.0.0.1", port: int = 8080, reviewer: str | None = None
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (0: any free port), products loaded; not yet serving.

    Raises `manga_assets.explorer.products.NoProductsError` when the data directory has no
    model's products.
    """
    explorer = Explorer(Path(data_dir), reviewer)
    explorer.products.snapshot()
    server = ThreadingHTTPServer((host, port), make_handler(explorer))
    server.daemon_threads = True
    server.explorer = explorer  # type: ignore[attr-defined]
    threading.Thread(target=warm_up, args=(explorer,), daemon=True).start()
    return server
