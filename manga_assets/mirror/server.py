"""A loopback HTTP server for a local SAS tree, laid out and answering like data.sdss.org.

A file at ``root/dr17/manga/...`` is served at ``http://127.0.0.1:<port>/sas/dr17/manga/...``,
so the downloader, the demo and the tests use the same URLs as the real Science Archive Server.
The server speaks the parts of HTTP/1.1 a robust client relies on: GET and HEAD, keep-alive,
single byte ranges (206/416, If-Range), Apache-style ETag and Last-Modified, conditional requests
(304), optional HTTP Basic authentication (as for proprietary releases). It never lists
directories (403), never serves a path outside ``root``, binds 127.0.0.1 only, and answers only
requests addressed to the loopback (a foreign Host header, as a DNS-rebinding page in a browser
sends, gets 421).

For tests and benchmarks it can add a fixed latency to every response, inject failures from a
:class:`~manga_assets.mirror.transfer_faults.FaultPlan`, and write an access log with one line
per request (read it back with :func:`read_access_log`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import mimetypes
import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Literal
from urllib.parse import unquote, urlsplit

from manga_assets.mirror.transfer_faults import Fault, FaultPlan

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"
_ACCEPTED_HOSTS = frozenset({"127.0.0.1", "localhost"})
_URL_PREFIX = "/sas/"
_SEND_CHUNK = 256 * 1024
# Idle keep-alive connections are dropped after this long so that handler threads do not pile up.
_IDLE_CONNECTION_TIMEOUT_S = 30.0
_RESET_GRACE_S = 0.2
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as the mirror recorded it.

    Attributes
    ----------
    method : str
        'GET' or 'HEAD'.
    path : str
        Request path as sent ('/sas/dr17/manga/...'), without the query string.
    status : int
        Status code answered.
    bytes_sent : int
        Body bytes actually written (less than announced when a fault cut the body short).
    range : str or None
        The Range header, if the client sent one.
    conditional : bool
        Whether the request carried If-None-Match or If-Modified-Since.
    user : str or None
        User name from an Authorization: Basic header, if any (never the password).
    """

    method: str
    path: str
    status: int
    bytes_sent: int
    range: str | None
    conditional: bool
    user: str | None


def read_access_log(path: Path) -> list[AccessLogEntry]:
    """Parse an access log written by :class:`MirrorServer`, one entry per request, in order."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        method, req_path, status, sent, range_, conditional, user = line.split("\t")
        entries.append(
            AccessLogEntry(
                method=method,
                path=req_path,
                status=int(status),
                bytes_sent=int(sent),
                range=None if range_ == "-" else range_,
                conditional=conditional == "1",
                user=None if user == "-" else user,
            )
        )
    return entries


class _AccessLog:
    """Tab-separated request log, appended from many handler threads."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, entry: AccessLogEntry) -> None:
        fields = [
            entry.method,
            entry.path,
            str(entry.status),
            str(entry.bytes_sent),
            entry.range or "-",
            "1" if entry.conditional else "0",
            entry.user or "-",
        ]
        # Header values come from the client: keep one request on one line whatever they hold.
        line = "\t".join(re.sub(r"[\t\r\n]", " ", field) for field in fields)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _MirrorHTTPServer(ThreadingHTTPServer):
    """The socket server plus the state its handlers share."""

    daemon_threads = True

    def __init__(
        self,
        port: int,
        root: Path,
        latency_s: float,
        faults: FaultPlan | None,
        access_log: _AccessLog | None,
        credentials: tuple[str, str] | None,
    ) -> None:
        super().__init__((LOOPBACK_HOST, port), _SasRequestHandler)
        self.root = root
        self.latency_s = latency_s
        self.faults = faults
        self.access_log = access_log
        self.credentials = credentials
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._connections: set[socket.socket] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.request_count = 0

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up mid-response are normal here; keep stderr quiet.
        logger.debug("mirror: error while answering %s", client_address, exc_info=True)

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.request_count += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_answered(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self.in_flight == 0, timeout)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        """Close every open client connection, so a stopped server really stops answering."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _SasRequestHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD for files under the server's root."""

    server: _MirrorHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_CONNECTION_TIMEOUT_S

    def version_string(self) -> str:
        return "manga-assets-mirror"

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: object) -> None:
        # Quiet by default: the access log, if asked for, is the record of requests.
        logger.debug("mirror: " + format, *args)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    # -- one request ----------------------------------------------------------------------------

    def _answer(self, *, send_body: bool) -> None:
        self._status = 0
        self._sent = 0
        self._logged = False
        self.server.request_started()
        try:
            if self.server.latency_s > 0:
                self.server.stopping.wait(self.server.latency_s)
            self._dispatch(send_body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._request_done()

    def _request_done(self) -> None:
        """Log the request and count it as answered; called once, as soon as the reply is out."""
        if self._logged:
            return
        self._logged = True
        if self.server.access_log is not None:
            self.server.access_log.write(
                AccessLogEntry(
                    method=self.command,
                    path=urlsplit(self.path).path,
                    status=self._status,
                    bytes_sent=self._sent,
                    range=self.headers.get("Range"),
                    conditional=bool(
                        self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since")
                    ),
                    user=_basic_auth_user(self.headers.get("Authorization")),
                )
            )
        self.server.request_answered()

    def _dispatch(self, send_body: bool) -> None:
        relative = _sas_relative_path(self.path)
        if not self._addressed_to_loopback():
            # A web page on another site can make a browser send requests here (DNS
            # rebinding); it cannot make them carry a loopback Host header.
            self._send_text(421, "this server answers only requests to 127.0.0.1 or localhost")
            return
        if self.server.credentials is not None and not self._authorised():
            self._send_text(
                401, "authentication required", {"WWW-Authenticate": 'Basic realm="SAS"'}
            )
            return
        fault = self.server.faults.take(relative) if self.server.faults and relative else None
        if fault is not None and fault.kind == "http":
            self._send_text(fault.status, f"injected fault: HTTP {fault.status}")
            return
        file = _resolve_inside(self.server.root, relative) if relative else None
        if file is None:
            folder = _folder_inside(self.server.root, relative) if relative else None
            if folder is None:
                self._send_text(404, "not found")
            else:
                # Listings would show unfinished .part files and anything else in the tree. A
                # 403 still tells a release watch that the folder exists.
                self._send_text(403, "directory listings are not served")
            return
        self._send_file(file, fault, send_body)

    def _addressed_to_loopback(self) -> bool:
        host = self.headers.get("Host")
        if host is None:
            return self.request_version == "HTTP/1.0"  # HTTP/1.1 requires a Host header
        name, _, port = host.strip().lower().rpartition(":")
        if not name or not port.isdigit():
            name, port = host.strip().lower(), ""
        own_port = str(self.server.server_address[1])
        return name in _ACCEPTED_HOSTS and port in ("", own_port)

    def _authorised(self) -> bool:
        assert self.server.credentials is not None
        user, password = self.server.credentials
        expected = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        # Compared as bytes: a header with non-ASCII characters is a wrong password (401), not
        # a TypeError that drops the connection unanswered.
        given = self.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, expected)

    def _send_file(self, file: Path, fault: Fault | None, send_body: bool) -> None:
        stat = file.stat()
        size = stat.st_size
        if fault is not None and fault.kind == "truncated":
            size = int(size * fault.fraction)
        etag = f'"{size:x}-{stat.st_mtime_ns // 1000:x}"'
        last_modified = formatdate(stat.st_mtime, usegmt=True)
        validators = {"ETag": etag, "Last-Modified": last_modified}

        if _not_modified(self.headers, etag, stat.st_mtime):
            self._start_response(304, validators)
            self.end_headers()
            return

        byte_range = _requested_range(self.headers, size, etag, last_modified)
        if byte_range == "unsatisfiable":
            self._send_text(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
            return
        start, stop = byte_range if byte_range is not None else (0, size)
        headers = {
            **validators,
            "Accept-Ranges": "bytes",
            "Content-Type": _content_type(file.name),
        }
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        announced = stop - start
        if fault is not None and fault.kind == "lying_length":
            announced += fault.extra_bytes
        headers["Content-Length"] = str(announced)
        self._start_response(206 if byte_range is not None else 200, headers)
        self.end_headers()
        if not send_body:
            return

        cut_at = stop
        if fault is not None and fault.kind in ("stall", "reset"):
            cut_at = start + int((stop - start) * fault.fraction)
        self._send_bytes(file, start, cut_at)
        if fault is not None and fault.kind != "truncated":
            self._misbehave(fault)

    def _misbehave(self, fault: Fault) -> None:
        """End the exchange the way ``fault`` says, after the (partial) body was sent."""
        self.close_connection = True
        self._request_done()
        if fault.kind == "stall":
            self.server.stopping.wait(fault.seconds)
        elif fault.kind == "reset":
            # A reset discards whatever the client has not yet read from its socket, so give it
            # a moment to read what was sent: the fault is meant to strike mid-body.
            self.server.stopping.wait(_RESET_GRACE_S)
            # SO_LINGER with a zero timeout turns close() into an abortive close: the peer gets
            # RST instead of FIN. The file objects hold references, so close them first.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()

    def _send_bytes(self, file: Path, start: int, stop: int) -> None:
        with open(file, "rb") as handle:
            handle.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = handle.read(min(_SEND_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                self._sent += len(chunk)
                remaining -= len(chunk)

    def _start_response(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)

    def _send_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = (text + "\n").encode()
        self._start_response(
            status,
            {"Content-Type": "text/plain", "Content-Length": str(len(body)), **(headers or {})},
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self._sent += len(body)


def _sas_relative_path(request_path: str) -> str | None:
    """The file path below the SAS root named by a request, or None when it names none."""
    path = unquote(urlsplit(request_path).path)
    if not path.startswith(_URL_PREFIX):
        return None
    relative = path[len(_URL_PREFIX) :].rstrip("/")
    parts = relative.split("/")
    if not relative or "\x00" in relative or any(part in ("", ".", "..") for part in parts):
        return None
    return relative


def _resolve_inside(root: Path, relative: str) -> Path | None:
    """The regular file at ``root/relative``, or None if absent or if it resolves outside root.

    Resolving follows symbolic links, so a link pointing out of the tree is refused as well.
    """
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


def _folder_inside(root: Path, relative: str) -> Path | None:
    """The folder at ``root/relative``, or None if absent or if it resolves outside root."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_dir():
        return None
    return candidate


def _not_modified(headers: HTTPMessage, etag: str, mtime: float) -> bool:
    """Evaluate If-None-Match, or else If-Modified-Since (RFC 9110, section 13.2.2)."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag in tags
    if_modified_since = headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since
    return False


def _requested_range(
    headers: HTTPMessage, size: int, etag: str, last_modified: str
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The single byte range asked for as (start, stop), 'unsatisfiable', or None for the whole.

    Malformed and multi-range headers are ignored (the whole file is served), as RFC 9110 allows,
    and so is a Range whose If-Range validator no longer matches the file.
    """
    header = headers.get("Range")
    if not header:
        return None
    if_range = headers.get("If-Range")
    if if_range and if_range.strip() not in (etag, last_modified):
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    if not last:
        return start, size
    if int(last) < start:
        return None
    return start, min(int(last), size - 1) + 1


def _content_type(name: str) -> str:
    if name.endswith(".gz"):
        return "application/x-gzip"
    if name.endswith(".fits"):
        return "application/fits"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _basic_auth_user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[len("Basic ") :], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


class MirrorServer:
    """Serve a local SAS tree over HTTP on 127.0.0.1, in a background thread.

    Parameters
    ----------
    root : Path
        Local SAS root; ``root/dr17/manga/x`` is served at ``<url>/dr17/manga/x``.
    host : str, optional
        Must be '127.0.0.1' (or 'localhost'); anything else is refused. Default '127.0.0.1'.
    port : int, optional
        TCP port; 0 (default) lets the system pick a free one (see :attr:`url`).
    latency_s : float, optional
        Seconds to wait before answering each request, to mimic a distant server.
    access_log : Path, optional
        File to append one tab-separated line per request to (see :func:`read_access_log`).
    faults : FaultPlan, optional
        Failures to inject, per path.
    credentials : tuple of (str, str), optional
        When given, every request needs HTTP Basic authentication with this user and password.

    Raises
    ------
    ValueError
        If ``host`` is not the loopback address.
    NotADirectoryError
        If ``root`` is not a directory.

    Examples
    --------
    >>> with MirrorServer(tmp_path) as server:  # doctest: +SKIP
    ...     requests.get(server.url + "/dr17/manga/spectro/analysis/...")
    """

    def __init__(
        self,
        root: Path,
        host: str = LOOPBACK_HOST,
        port: int = 0,
        *,
        latency_s: float = 0.0,
        access_log: Path | None = None,
        faults: FaultPlan | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if host not in _ACCEPTED_HOSTS:
            raise ValueError(
                f"the SAS mirror binds the loopback address only (host='127.0.0.1'), not {host!r}: "
                "it has no access control and is meant for tests and the local demo"
            )
        root = Path(root).resolve()
        if not root.is_dir():
            raise NotADirectoryError(f"SAS mirror root {root} is not a directory")
        self.root = root
        self.port = port
        self.latency_s = latency_s
        self.access_log = access_log
        self.faults = faults
        self.credentials = credentials
        self._httpd: _MirrorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: _AccessLog | None = None

    @property
    def url(self) -> str:
        """Root URL of the served tree, 'http://127.0.0.1:<port>/sas'."""
        if self._httpd is None:
            raise RuntimeError("the mirror is not running; call start() or use it in a with block")
        return f"http://{LOOPBACK_HOST}:{self._httpd.server_address[1]}/sas"

    @property
    def max_concurrent_requests(self) -> int:
        """Largest number of requests being answered at the same time since start."""
        return self._require_running().max_in_flight

    @property
    def request_count(self) -> int:
        """Number of requests received since start."""
        return self._require_running().request_count

    def start(self) -> MirrorServer:
        """Bind the port and start answering in a daemon thread; returns the server itself."""
        if self._httpd is not None:
            raise RuntimeError("the mirror is already running")
        self._log = _AccessLog(self.access_log) if self.access_log is not None else None
        self._httpd = _MirrorHTTPServer(
            self.port, self.root, self.latency_s, self.faults, self._log, self.credentials
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sas-mirror-{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("mirror: serving %s at %s", self.root, self.url)
        return self

    def stop(self) -> None:
        """Stop answering, close open connections and the access log. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        if self._thread is not None:
            self._thread.join()
        if self._log is not None:
            self._log.close()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered (so the access log is complete).

        A client can finish reading a response a moment before the server thread records it;
        call this before reading the access log. Returns False on timeout.
        """
        return self._require_running().wait_idle(timeout)

    def _require_running(self) -> _MirrorHTTPServer:
        if self._httpd is None:
            raise RuntimeError("the mirror is not running")
        return self._httpd

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(
    root: Path,
    port: int = 8000,
    *,
    access_log: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
    credentials: tuple[str, str] | None = None,
) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` until interrupted (Ctrl-C); for ``mirror serve``.

    Parameters
    ----------
    root : Path
        Local SAS root.
    port : int, optional
        TCP port, default 8000.
    access_log : Path, optional
        Request log file.
    on_ready : callable, optional
        Called with the root URL once the port is bound, e.g. to tell the user what to set
        ``MANGA_SAS_URL`` to.
    credentials : tuple of (str, str), optional
        Require HTTP Basic authentication with this user and password.
    """
    with MirrorServer(root, port=port, access_log=access_log, credentials=credentials) as server:
        logger.info("serving SAS tree %s at %s", root, server.url)
        if on_ready is not None:
            on_ready(server.url)
        forever = threading.Event()
        try:
            # A timed wait keeps the main thread responsive to KeyboardInterrupt.
            while not forever.wait(0.5):
                pass
        except KeyboardInterrupt:
            logger.info("mirror stopped")
