"""SAS credentials given in the URL (``https://user:password@host/sas``), kept out of everything.

A password inside ``MANGA_SAS_URL`` would travel wherever the URL goes: log lines, exception
messages, metadata, the resource configuration the Dagster UI shows. So the settings split it
off as soon as they are made (:func:`strip_credentials`): from then on the process only handles
the URL without it, and the downloader asks :func:`credentials_for` when it opens a session. The
credentials live in this process's memory only; a Dagster step process that loads the code
location reads them from its own environment the same way.
"""

from __future__ import annotations

import threading
from urllib.parse import unquote, urlsplit

from manga_assets.sas.network import redact_url

_lock = threading.Lock()
_by_origin: dict[str, tuple[str, str]] = {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port or ''}"


def strip_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part, which is remembered for its origin."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    with _lock:
        _by_origin[_origin(url)] = (unquote(parts.username), unquote(parts.password or ""))
    return redact_url(url)


def credentials_for(url: str) -> tuple[str, str] | None:
    """(user, password) remembered for the origin of ``url``, if any."""
    with _lock:
        return _by_origin.get(_origin(url))
