"""A small SAS tree served by the loopback mirror, shared by the transfer and mirror tests."""

from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from manga_assets.mirror.server import AccessLogEntry, MirrorServer, read_access_log
from manga_assets.mirror.transfer_faults import FaultPlan

# Above the downloader's 256 KiB read chunk, so that a body cut in half still leaves whole
# chunks on disk to resume from.
PAYLOAD_BYTES = 600_000
MAPS_PATH = "dr17/manga/spectro/analysis/v3_1_1/3.1.0/HYB10-MILESHC-MASTARSSP/8485/1901/manga-8485-1901-MAPS-HYB10-MILESHC-MASTARSSP.fits.gz"  # noqa: E501 - a real SAS path


def fits_header() -> bytes:
    """A minimal FITS primary header: 80-character cards padded to one 2880-byte block."""
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =    0",
        "END",
    ]
    return "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")


def fits_gz(payload_bytes: int = PAYLOAD_BYTES, seed: int = 0) -> bytes:
    """A gzip'd FITS-like file whose random payload does not compress (so sizes are known)."""
    payload = random.Random(seed).randbytes(payload_bytes)
    return gzip.compress(fits_header() + payload, compresslevel=1, mtime=0)


@dataclass
class Mirror:
    """A running MirrorServer over ``root`` with its fault plan and access log."""

    server: MirrorServer
    root: Path
    faults: FaultPlan
    log_path: Path

    def put(self, relative: str, content: bytes) -> str:
        """Write ``content`` at ``relative`` under the root; returns its URL."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return self.url(relative)

    def url(self, relative: str) -> str:
        return f"{self.server.url}/{relative}"

    def requests_for(self, relative: str) -> list[AccessLogEntry]:
        """Requests the server has answered for ``relative``, in order."""
        assert self.server.wait_idle(10), "the mirror is still answering requests"
        if not self.log_path.exists():
            return []
        return [e for e in read_access_log(self.log_path) if e.path == f"/sas/{relative}"]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "sas"
    root.mkdir()
    faults = FaultPlan()
    log_path = tmp_path / "access.log"
    with MirrorServer(root, access_log=log_path, faults=faults) as server:
        yield Mirror(server, root, faults, log_path)


@dataclass
class SeenRequest:
    path: str
    authorization: str | None


class ScriptedServer:
    """A loopback HTTP server whose every GET is answered by ``answer(handler)``.

    For behaviour the mirror never shows (redirects, trickling bodies); ``seen`` records each
    request's path and Authorization header.
    """

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.seen: list[SeenRequest] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen.append(SeenRequest(self.path, self.headers.get("Authorization")))
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
