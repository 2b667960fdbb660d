"""Telling whether the SAS can be reached, and describing network failures in a few words.

requests wraps a refused connection in three layers of exceptions whose text runs to a
paragraph; the helpers here reduce them to 'Connection refused' or 'host name not found' for
results and logs, and strip credentials from URLs before they are shown anywhere.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

SAS_URL_ENV = "MANGA_SAS_URL"


class ServerUnreachable(ConnectionError):
    """The SAS server does not accept connections (down, wrong address, or no network)."""


def check_server(sas_url: str, *, timeout: float = 10.0) -> None:
    """Make sure something answers HTTP at ``sas_url``; call it before a large download.

    Any HTTP answer counts, even an error status: the question is whether the host is there.

    Parameters
    ----------
    sas_url : str
        The SAS root (``MANGA_SAS_URL``) or any URL under it.
    timeout : float, optional
        Seconds to wait for the connection and the answer.

    Raises
    ------
    ServerUnreachable
        If the connection is refused, times out, or the host name does not resolve. The message
        names the URL and says what to check.
    """
    try:
        with requests.Session() as session:
            session.head(sas_url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise ServerUnreachable(
            f"cannot reach the SAS at {redact_url(sas_url)}: {describe_network_error(exc)}. "
            f"Check the network connection and {SAS_URL_ENV} (the SAS root URL, by default "
            "https://data.sdss.org/sas; for a local mirror: is 'manga-assets mirror serve' "
            "running?)"
        ) from None


def redact_url(url: str) -> str:
    """``url`` without any user:password@ part (an IPv6 host keeps its brackets)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def host_of(url: str) -> str:
    """'host:port' of ``url`` (without credentials), for short messages."""
    return urlsplit(url).netloc.rpartition("@")[2]


def is_connect_failure(exc: requests.RequestException) -> bool:
    """True when no connection could be made at all (refused, connect timeout, unknown host)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # NewConnectionError and NameResolutionError derive from ConnectTimeoutError in urllib3 2.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def describe_network_error(exc: BaseException) -> str:
    """A short cause for a failed request, instead of requests' nested exception text."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer before the read timeout"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "host name not found"
    return innermost_cause(exc)


def innermost_cause(exc: BaseException) -> str:
    """The deepest OSError message in an exception chain, e.g. 'Connection refused'."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    best = f"{type(exc).__name__}"
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            best = current.strerror
        stack.extend(
            [
                current.__cause__,
                current.__context__,
                getattr(current, "reason", None),
                *current.args,
            ]
        )
    return best
