"""Downloading thousands of SAS files robustly: bounded concurrency, retries, resume, validation.

:class:`Downloader` fetches URLs into local paths. Each file streams into ``<name>.part`` in
chunks (memory does not grow with file size or count), is resumed with a Range request after an
interruption, is checked (size against the server's length, gzip integrity, FITS signature, see
:mod:`manga_assets.sas.integrity`) and only then renamed into place. A ``<name>.meta.json``
sidecar records the server's ETag and Last-Modified, so a later run asks with a conditional GET
whether the file changed and downloads only what did (a reprocessed galaxy, for instance).

A server is not trusted either: each file has a total deadline and a size cap, credentials are
sent only to their own origin (:mod:`manga_assets.sas.credentials`), and a redirect to another
origin is refused rather than followed.

Failures are data: every job gets a :class:`DownloadResult` whose ``status`` is ``ok``,
``missing`` (HTTP 404), ``corrupt`` (content still wrong after retries) or ``error`` (network,
server or permission failure) and whose ``reason`` says what to do. A server that cannot be
reached at all is detected by :func:`check_server` before a run, and during a run it stops the
remaining jobs early instead of retrying each of them in turn.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import IncompleteRead
from pathlib import Path
from queue import Empty, LifoQueue
from types import TracebackType
from typing import Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from manga_assets.sas.credentials import (
    PASSWORD_ENV,
    USERNAME_ENV,
    InsecureCredentialsError,
    SasCredentials,
    credentials_for,
    origin_of,
    sends_in_clear,
)
from manga_assets.sas.integrity import ContentCheck
from manga_assets.sas.network import (
    SAS_URL_ENV,
    ServerUnreachable,
    check_server,
    describe_network_error,
    host_of,
    innermost_cause,
    is_connect_failure,
    redact_url,
)
from manga_assets.sas.progress import ProgressCounter, ProgressEvent, TqdmProgress, tqdm_progress
from manga_assets.sas.sidecar import DownloadRecord, part_path, read_record, write_record
from manga_assets.settings import DEFAULT_DOWNLOAD_DEADLINE_S, DEFAULT_DOWNLOAD_MAX_MB

__all__ = [
    "DownloadResult",
    "DownloadStatus",
    "Downloader",
    "ProgressEvent",
    "ServerUnreachable",
    "TqdmProgress",
    "check_server",
    "tqdm_progress",
]

logger = logging.getLogger(__name__)

DownloadStatus = Literal["ok", "missing", "corrupt", "error"]

# Most bytes per read and write. Reads return what has arrived (read1), so an interrupted
# transfer keeps everything written before the break for the resume; 256 KiB keeps per-chunk
# overhead negligible.
_CHUNK_BYTES = 256 * 1024
_MAX_BACKOFF_S = 60.0
_MAX_RETRY_AFTER_S = 120.0
_USER_AGENT = "manga-assets (python-requests)"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
# Redirects followed within one origin (the SAS may move a folder); one to another origin is
# refused, since neither its content nor the credentials belong there.
_MAX_REDIRECTS = 5
# Writes that fail for these reasons fail for every file: the disk (or the quota) is full.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DEADLINE_ENV = "MANGA_DOWNLOAD_DEADLINE_S"
MAX_MB_ENV = "MANGA_DOWNLOAD_MAX_MB"


@dataclass(frozen=True)
class DownloadResult:
    """The outcome of one download job.

    Attributes
    ----------
    url : str
        The URL asked for.
    dest : Path
        Where the file is (or would have been) stored.
    status : {'ok', 'missing', 'corrupt', 'error'}
        ``ok``: ``dest`` holds a validated, current copy. ``missing``: the server has no such
        file (HTTP 404/410). ``corrupt``: the content failed validation on every attempt.
        ``error``: gave up on network, server or permission failures.
    reason : str
        Empty when ok; otherwise what failed and what to check.
    bytes : int
        Size of the local file when ok, else 0.
    sha256 : str or None
        Hex SHA-256 of the local file when ok.
    fetched : bool
        True when the file was transferred in this call; False when the local copy was
        already present and current.
    """

    url: str
    dest: Path
    status: DownloadStatus
    reason: str
    bytes: int
    sha256: str | None
    fetched: bool

    @property
    def ok(self) -> bool:
        """Whether ``dest`` holds a validated copy."""
        return self.status == "ok"


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(
        self,
        reason: str,
        *,
        corrupt: bool = False,
        unreachable: bool = False,
        wait: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.corrupt = corrupt
        self.unreachable = unreachable
        self.wait = wait
        self.retry_after = retry_after
        # ETag of the response whose body was cut short, for If-Range when resuming it.
        self.part_etag: str | None = None
        # SHA-256 of invalid content, to notice a server that sends the same bad bytes again.
        self.content_sha256: str | None = None


class _GiveUp(Exception):
    """An attempt ended in a way no retry can fix (deadline passed, file over the size cap)."""

    def __init__(self, reason: str, status: DownloadStatus = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _RedirectRefused(Exception):
    """The server redirected to another origin; the message says where (redacted)."""


class _NoAuth(requests.auth.AuthBase):
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_NO_AUTH = _NoAuth()


class _RunControl:
    """State shared by the jobs of one fetch_many call: is the server up, was the run cancelled.

    The server counts as down once a job has used up its retries on connection failures while
    no request of the run got any HTTP answer; the other jobs then stop instead of each
    retrying against a dead host.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers = 0
        self._stop = threading.Event()
        self.stop_reason = ""

    def answered(self) -> None:
        with self._lock:
            self._answers += 1

    def answers(self) -> int:
        with self._lock:
            return self._answers

    def gave_up_unreachable(self, answers_before: int, reason: str) -> None:
        with self._lock:
            if self._answers == answers_before and not self._stop.is_set():
                self.stop_reason = f"skipped: the server is unreachable ({reason})"
                self._stop.set()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if not self._stop.is_set():
                self.stop_reason = reason
                self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the run was stopped meanwhile."""
        return self._stop.wait(seconds)


class _SessionPool:
    """requests Sessions lent to one thread at a time (a Session is not guaranteed thread-safe).

    Sessions and their keep-alive connections outlive a fetch_many call, so consecutive calls
    reuse connections.
    """

    def __init__(self) -> None:
        self._idle: LifoQueue[requests.Session] = LifoQueue()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[requests.Session]:
        try:
            session = self._idle.get_nowait()
        except Empty:
            session = self._new_session()
        try:
            yield session
        finally:
            self._idle.put(session)

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # Retries are ours (with resume and validation); the adapter must not retry underneath.
        adapter = requests.adapters.HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Ask for the stored bytes: a .gz file must arrive as the same .gz, never re-encoded.
        session.headers.update({"Accept-Encoding": "identity", "User-Agent": _USER_AGENT})
        # Credentials are chosen per request (Downloader._auth_for), never set on the session.
        with self._lock:
            self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()


class Downloader:
    """Download SAS files concurrently, with retries, resume, validation and revalidation.

    Parameters
    ----------
    max_workers : int, optional
        Files downloaded at the same time by :meth:`fetch_many` (threads, each with its own HTTP
        session). Default 8.
    connect_timeout : float, optional
        Seconds to wait for a TCP connection. Default 10.
    read_timeout : float, optional
        Seconds to wait for the next bytes of an answer (not for the whole file). Default 60.
    max_retries : int, optional
        Further attempts after the first one fails on a 5xx/429 answer, a timeout, a broken
        connection or invalid content. Default 5. Retrying invalid content stops early when
        the server sends the same bytes twice (its copy is damaged).
    backoff_s : float, optional
        Wait before the first retry; doubled for each further one (capped at 60 s), multiplied
        by a random factor in [0.5, 1.5) so that many workers do not retry in lockstep.
        A server's Retry-After is honoured when longer. Default 0.5.
    credentials : SasCredentials, optional
        HTTP Basic credentials, sent only to their own origin. When None, each URL gets what
        :func:`~manga_assets.sas.credentials.credentials_for` allows it (the user:password given
        in ``MANGA_SAS_URL`` for its origin, or ``MANGA_SAS_USERNAME`` and
        ``MANGA_SAS_PASSWORD`` on the origin of ``MANGA_SAS_URL``), else the ``~/.netrc`` entry
        of its host (through requests) unless it is plain http:// off loopback. Nothing ever
        prompts, and credentials never appear in logs or results. A redirect to another origin
        is refused (status 'error'); one within the origin is followed.
    revalidate : bool, optional
        True (default): a file already downloaded is checked with a conditional GET and
        downloaded again only if the server's copy changed. False: it is kept without any
        request as long as its size matches its sidecar record.
    deadline_s : float, optional
        Seconds one file may take in all, retries included: a server that trickles bytes just
        fast enough to beat ``read_timeout`` cannot hold a worker for ever. Default one hour.
    max_bytes : int, optional
        Largest file accepted; a larger one (announced or received) is refused as 'corrupt'.
        Default 4 GiB, far above any DR17 MAPS file or catalogue.

    Examples
    --------
    >>> with Downloader(max_workers=16) as downloader:  # doctest: +SKIP
    ...     results = downloader.fetch_many([(url, Path("data/sas/...")) for url in urls])
    >>> [r.reason for r in results if not r.ok]  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        max_workers: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        credentials: SasCredentials | None = None,
        revalidate: bool = True,
        deadline_s: float = DEFAULT_DOWNLOAD_DEADLINE_S,
        max_bytes: int = DEFAULT_DOWNLOAD_MAX_MB * 1024**2,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
        if connect_timeout <= 0 or read_timeout <= 0 or deadline_s <= 0:
            raise ValueError("connect_timeout, read_timeout and deadline_s must be positive")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self.max_workers = max_workers
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.revalidate = revalidate
        if credentials is not None and sends_in_clear(credentials.origin):
            raise InsecureCredentialsError(
                f"refusing to send credentials to {credentials.origin} over plain http://; "
                "use https://"
            )
        self._credentials = credentials
        self._sessions = _SessionPool()

    def __repr__(self) -> str:
        return (
            f"Downloader(max_workers={self.max_workers}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, revalidate={self.revalidate})"
        )

    def close(self) -> None:
        """Close the HTTP sessions and their connections."""
        self._sessions.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def fetch(self, url: str, dest: Path) -> DownloadResult:
        """Download ``url`` to ``dest`` (or confirm the local copy is current); never raises
        for a failed download, which is reported in the result."""
        return self._fetch_guarded(url, Path(dest), _RunControl())

    def fetch_many(
        self,
        jobs: Sequence[tuple[str, Path]],
        on_progress: Callable[[ProgressEvent], None] | None = None,
    ) -> list[DownloadResult]:
        """Download every ``(url, dest)`` job, ``max_workers`` at a time.

        Parameters
        ----------
        jobs : sequence of (str, Path)
            URLs and local destinations; destinations must be distinct.
        on_progress : callable, optional
            Called in the calling thread after each job finishes (see :func:`tqdm_progress`).

        Returns
        -------
        list of DownloadResult
            One per job, in the order of ``jobs``. A failed job never raises; if the server
            turns out to be unreachable, the remaining jobs end quickly with status 'error'
            and a reason that says so.

        Raises
        ------
        ValueError
            If two jobs share a destination.
        """
        jobs = [(url, Path(dest)) for url, dest in jobs]
        seen: set[Path] = set()
        for _, dest in jobs:
            if dest in seen:
                raise ValueError(f"two download jobs write to the same file {dest}")
            seen.add(dest)
        if not jobs:
            return []

        control = _RunControl()
        results: list[DownloadResult | None] = [None] * len(jobs)
        progress = ProgressCounter(len(jobs))
        workers = min(self.max_workers, len(jobs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sas-download") as pool:
            futures: dict[Future[DownloadResult], int] = {
                pool.submit(self._fetch_guarded, url, dest, control): index
                for index, (url, dest) in enumerate(jobs)
            }
            try:
                for future in as_completed(futures):
                    result = future.result()
                    results[futures[future]] = result
                    event = progress.add(result)
                    if on_progress is not None:
                        on_progress(event)
            except BaseException:
                # Ctrl-C or a failing progress callback: let running attempts end, start no more.
                control.cancel("cancelled: the download was interrupted")
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        done = [result for result in results if result is not None]
        logger.info("SAS download finished: %s", progress.last_summary)
        return done

    # -- one job -------------------------------------------------------------------------------

    def _fetch_guarded(self, url: str, dest: Path, control: _RunControl) -> DownloadResult:
        try:
            with self._sessions.session() as session:
                result = self._fetch(session, url, dest, control)
        except InsecureCredentialsError as exc:
            result = _result(url, dest, "error", str(exc))
        except OSError as exc:
            # Network errors are handled inside; what escapes is local: disk full, permissions.
            if exc.errno in _DISK_FULL:
                reason = f"disk full writing {dest}; free space there and run again"
            else:
                reason = f"cannot write {dest}: {exc.strerror or exc}; check permissions"
            result = _result(url, dest, "error", reason)
        except Exception as exc:  # a bug must cost one file, not the whole batch
            logger.exception("unexpected error while downloading %s", redact_url(url))
            result = _result(url, dest, "error", f"unexpected error: {type(exc).__name__}: {exc}")
        if not result.ok:
            logger.warning(
                "download of %s failed (%s): %s", redact_url(url), result.status, result.reason
            )
        return result

    def _fetch(
        self, session: requests.Session, url: str, dest: Path, control: _RunControl
    ) -> DownloadResult:
        record = read_record(dest)
        if record is not None and not self.revalidate:
            return _current(url, dest, record)
        if control.stopped:
            return _result(url, dest, "error", control.stop_reason)
        dest.parent.mkdir(parents=True, exist_ok=True)

        answers_before = control.answers()
        deadline = time.monotonic() + self.deadline_s
        attempts = self.max_retries + 1
        part_etag: str | None = None  # validator of the .part, once this call has seen one
        failure: _Retry | None = None
        attempt = 0
        while attempt < attempts:
            attempt += 1
            if failure is not None and failure.wait:
                delay = self._backoff_delay(attempt - 1, failure.retry_after)
                logger.info(
                    "retrying %s in %.1f s (attempt %d of %d): %s",
                    redact_url(url),
                    delay,
                    attempt,
                    attempts,
                    failure.reason,
                )
                if delay >= deadline - time.monotonic():
                    return _result(url, dest, "error", self._deadline_reason(failure.reason))
                if control.sleep(delay):
                    return _result(url, dest, "error", control.stop_reason)
            elif control.stopped:
                return _result(url, dest, "error", control.stop_reason)
            try:
                return self._attempt(session, url, dest, record, part_etag, control, deadline)
            except _GiveUp as given_up:
                return _result(url, dest, given_up.status, given_up.reason)
            except _Retry as retry:
                repeated = (
                    failure is not None
                    and retry.content_sha256 is not None
                    and retry.content_sha256 == failure.content_sha256
                )
                failure = retry
                part_etag = retry.part_etag or part_etag
            if repeated:
                # The same invalid bytes twice: the server's copy is damaged, and downloading
                # it again would only cost time and bandwidth.
                failure.reason += "; the server sent identical content twice"
                break

        assert failure is not None
        if failure.unreachable:
            control.gave_up_unreachable(answers_before, failure.reason)
        if failure.corrupt:
            part_path(dest).unlink(missing_ok=True)
            return _result(
                url,
                dest,
                "corrupt",
                f"{failure.reason} (after {attempt} attempts; the server's copy may be damaged: "
                "try again later, and report it if it persists)",
            )
        # A .part left by network failures is kept: the next run resumes it with a Range request.
        return _result(url, dest, "error", f"{failure.reason} (gave up after {attempt} attempts)")

    def _attempt(
        self,
        session: requests.Session,
        url: str,
        dest: Path,
        record: DownloadRecord | None,
        part_etag: str | None,
        control: _RunControl,
        deadline: float,
    ) -> DownloadResult:
        """One request; returns a final result or raises :class:`_Retry` or :class:`_GiveUp`."""
        part = part_path(dest)
        resume_from = part.stat().st_size if part.exists() else 0
        headers = {}
        if record is not None:
            if record.etag:
                headers["If-None-Match"] = record.etag
            if record.last_modified:
                headers["If-Modified-Since"] = record.last_modified
        if resume_from:
            headers["Range"] = f"bytes={resume_from}-"
            if part_etag:
                # The server sends the whole (new) file instead if the .part is of another version.
                headers["If-Range"] = part_etag

        try:
            response = self._get_within_origin(session, url, headers, control)
        except _RedirectRefused as refused:
            return _result(url, dest, "error", str(refused))
        except requests.RequestException as exc:
            return self._request_failed(url, dest, exc)
        with response:
            control.answered()
            return self._handle_response(
                url, dest, record, resume_from, response, control, deadline
            )

    def _get_within_origin(
        self,
        session: requests.Session,
        url: str,
        headers: dict[str, str],
        control: _RunControl,
    ) -> requests.Response:
        """GET ``url``, following redirects only while they stay on its origin.

        requests would follow a redirect anywhere and hand back the other server's content as
        if it were ``url``'s; here the content must come from the origin the user configured.
        """
        target = url
        for _ in range(_MAX_REDIRECTS + 1):
            response = session.get(
                target,
                headers=headers,
                stream=True,
                timeout=self.timeout,
                allow_redirects=False,
                auth=self._auth_for(target),
            )
            if not response.is_redirect:
                return response
            control.answered()
            location = urljoin(target, response.headers["Location"])
            response.close()
            if origin_of(location) != origin_of(url):
                raise _RedirectRefused(
                    f"{redact_url(target)} redirects to another server, {redact_url(location)}; "
                    f"not followed (downloads stay on the origin of {SAS_URL_ENV}). If the "
                    f"files have moved, set {SAS_URL_ENV} to the new server"
                )
            target = location
        raise requests.exceptions.TooManyRedirects(f"more than {_MAX_REDIRECTS} redirects")

    def _auth_for(self, url: str) -> tuple[str, str] | requests.auth.AuthBase | None:
        """What to authenticate a request to ``url`` with (None: requests may use ~/.netrc)."""
        credentials = self._credentials or credentials_for(url)
        if credentials is not None and credentials.applies_to(url):
            return credentials.basic_auth
        if sends_in_clear(url):
            # An explicit no-op stops requests from reading ~/.netrc for an unencrypted URL.
            return _NO_AUTH
        return None

    def _request_failed(
        self, url: str, dest: Path, exc: requests.RequestException
    ) -> DownloadResult:
        """A final result for a request that got no answer, or :class:`_Retry`."""
        description = describe_network_error(exc)
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
            return _result(url, dest, "error", f"invalid URL {redact_url(url)}: {exc}")
        if isinstance(exc, requests.exceptions.SSLError):
            return _result(
                url, dest, "error", f"TLS failure talking to {host_of(url)}: {description}"
            )
        if isinstance(exc, requests.exceptions.TooManyRedirects):
            return _result(url, dest, "error", f"too many redirects for {redact_url(url)}")
        if is_connect_failure(exc):
            raise _Retry(
                f"cannot connect to {host_of(url)} ({description}); check the network and "
                f"{SAS_URL_ENV}",
                unreachable=True,
            )
        raise _Retry(f"request to {host_of(url)} failed: {description}")

    def _handle_response(
        self,
        url: str,
        dest: Path,
        record: DownloadRecord | None,
        resume_from: int,
        response: requests.Response,
        control: _RunControl,
        deadline: float,
    ) -> DownloadResult:
        status = response.status_code
        part = part_path(dest)
        if status == 304 and record is not None:
            part.unlink(missing_ok=True)  # an unfinished download of some other version
            return _current(url, dest, record)
        if status in (404, 410):
            part.unlink(missing_ok=True)
            reason = f"not on the server (HTTP {status}): {redact_url(url)}"
            return _result(url, dest, "missing", f"{reason}; check the release and the path")
        if status in (401, 403):
            reason = (
                f"HTTP {status} from {host_of(url)}: access refused; check {USERNAME_ENV} and "
                f"{PASSWORD_ENV}, or the ~/.netrc entry for {urlsplit(url).hostname}"
            )
            return _result(url, dest, "error", reason)
        if status == 416:
            # The .part is not a prefix of the server's file (it changed or shrank): start over.
            part.unlink(missing_ok=True)
            raise _Retry("the partial download no longer matches the server's file", wait=False)
        if status == 429 or status >= 500:
            raise _Retry(
                f"HTTP {status} from {host_of(url)}",
                retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status not in (200, 206):
            return _result(url, dest, "error", f"unexpected HTTP {status} for {redact_url(url)}")

        if status == 206:
            span = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if span is None or int(span[1]) != resume_from:
                part.unlink(missing_ok=True)
                raise _Retry("the server resumed at the wrong offset", wait=False)
            expected = None if span[3] == "*" else int(span[3])
        else:
            resume_from = 0
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None

        if expected is not None and expected > self.max_bytes:
            part.unlink(missing_ok=True)
            raise _GiveUp(self._too_large_reason(f"the server announces {expected}"), "corrupt")
        check = ContentCheck(dest.name)
        try:
            self._stream_to_part(response, part, resume_from, check, control, deadline)
        except _Retry as retry:
            retry.part_etag = response.headers.get("ETag")
            raise

        problem = None
        if expected is not None and check.size != expected:
            problem = f"received {check.size} bytes but the server announced {expected}"
        problem = problem or check.problem()
        if problem is not None:
            part.unlink(missing_ok=True)
            invalid = _Retry(f"invalid content: {problem}", corrupt=True)
            invalid.content_sha256 = check.sha256
            raise invalid

        os.replace(part, dest)
        write_record(
            dest,
            DownloadRecord(
                url=redact_url(url),
                bytes=check.size,
                sha256=check.sha256,
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
            ),
        )
        logger.debug("downloaded %s (%d bytes)", redact_url(url), check.size)
        return DownloadResult(url, dest, "ok", "", check.size, check.sha256, fetched=True)

    def _stream_to_part(
        self,
        response: requests.Response,
        part: Path,
        resume_from: int,
        check: ContentCheck,
        control: _RunControl,
        deadline: float,
    ) -> None:
        """Append the body to ``part`` (kept bytes first through ``check``), fsync it.

        A full disk removes ``part`` (keeping it for a resume would only keep the disk full).
        """
        try:
            self._append_body(response, part, resume_from, check, control, deadline)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                part.unlink(missing_ok=True)
            raise

    def _append_body(
        self,
        response: requests.Response,
        part: Path,
        resume_from: int,
        check: ContentCheck,
        control: _RunControl,
        deadline: float,
    ) -> None:
        if resume_from:
            # The hash and the gzip check must cover the whole file, so replay the kept prefix.
            with open(part, "rb") as kept:
                while chunk := kept.read(_CHUNK_BYTES):
                    check.update(chunk)
        with open(part, "ab" if resume_from else "wb") as out:
            while True:
                try:
                    # read1 returns what has arrived (up to a chunk), so a trickling body still
                    # comes back often enough to be held to the deadline.
                    chunk = response.raw.read1(_CHUNK_BYTES, decode_content=False) or None
                except urllib3.exceptions.ReadTimeoutError:
                    stalled = f"no data for {self.timeout[1]:g} s (read timeout)"
                    raise _Retry(f"{stalled} from {host_of(response.url)}") from None
                except urllib3.exceptions.ProtocolError as exc:
                    if any(isinstance(arg, IncompleteRead) for arg in exc.args):
                        # The server closed cleanly before the length it announced: what it sent
                        # cannot be trusted as a prefix, so do not resume from it.
                        out.close()
                        part.unlink(missing_ok=True)
                        short = _Retry(
                            f"the server closed the connection after {check.size} bytes, "
                            "short of the announced length",
                            corrupt=True,
                        )
                        short.content_sha256 = check.sha256
                        raise short from None
                    raise _Retry(
                        f"connection broken mid-transfer ({innermost_cause(exc)})"
                    ) from None
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    raise _Retry(f"transfer failed ({innermost_cause(exc)})") from None
                if chunk is None:
                    break
                if check.size + len(chunk) > self.max_bytes:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise _GiveUp(self._too_large_reason("more arrived"), "corrupt")
                if time.monotonic() > deadline:
                    # The .part stays: a later run may resume it from a faster server.
                    raise _GiveUp(self._deadline_reason(f"{check.size} bytes received"))
                if control.stopped:
                    # Cancelled: stop now rather than at the end of a large file; the .part
                    # stays for the next run to resume.
                    raise _Retry("cancelled mid-transfer")
                out.write(chunk)
                check.update(chunk)
            out.flush()
            # Durable before the rename, so a crash cannot leave a renamed but empty file.
            os.fsync(out.fileno())

    def _deadline_reason(self, so_far: str) -> str:
        return (
            f"not finished within the {self.deadline_s:g} s allowed per file ({so_far}); the "
            f"server is too slow: try again later, or raise {DEADLINE_ENV}"
        )

    def _too_large_reason(self, detail: str) -> str:
        return (
            f"larger than the {self.max_bytes} bytes allowed per file ({detail}); if the file "
            f"is genuine, raise {MAX_MB_ENV}"
        )

    def _backoff_delay(self, retry_number: int, retry_after: float | None) -> float:
        delay = min(_MAX_BACKOFF_S, self.backoff_s * 2 ** (retry_number - 1))
        delay *= random.uniform(0.5, 1.5)
        if retry_after is not None:
            delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
        return delay


# -- helpers ------------------------------------------------------------------------------------


def _result(url: str, dest: Path, status: DownloadStatus, reason: str) -> DownloadResult:
    return DownloadResult(url, dest, status, reason, 0, None, fetched=False)


def _current(url: str, dest: Path, record: DownloadRecord) -> DownloadResult:
    return DownloadResult(url, dest, "ok", "", record.bytes, record.sha256, fetched=False)


def _retry_after_seconds(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
