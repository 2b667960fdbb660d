"""SAS credentials, bound to the one origin they were given for.

Credentials come from two places:

- the URL (``MANGA_SAS_URL=https://user:password@host/sas``): a password inside the URL would
  travel wherever the URL goes (log lines, exception messages, the resource configuration the
  Dagster UI shows), so the settings split it off as soon as they are made
  (:func:`strip_credentials`) and remember it for the URL's origin;
- ``MANGA_SAS_USERNAME`` / ``MANGA_SAS_PASSWORD``: they belong to the origin of
  ``MANGA_SAS_URL`` (default https://data.sdss.org/sas), never to whatever URL a download is
  given, since ``sas_url`` can be changed from the launchpad.

An origin is scheme, host and port, with the default port filled in, so ``https://host`` and
``https://host:443`` are the same origin. Credentials never go over plain ``http://`` except to
a loopback address (the local mirror): :func:`credentials_for` refuses with
:class:`InsecureCredentialsError`. They live in this process's memory only; a Dagster step
process that loads the code location reads them from its own environment the same way.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from manga_assets.sas.network import SAS_URL_ENV, redact_url
from manga_assets.settings import DEFAULT_SAS_URL

logger = logging.getLogger(__name__)

USERNAME_ENV = "MANGA_SAS_USERNAME"
PASSWORD_ENV = "MANGA_SAS_PASSWORD"
_DEFAULT_PORTS = {"http": 80, "https": 443}

_lock = threading.Lock()
_by_origin: dict[str, tuple[str, str]] = {}


class InsecureCredentialsError(ValueError):
    """Credentials would be sent unencrypted (plain http:// to a host that is not loopback)."""


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower-cased, with the scheme's default port filled in.

    Credentials match an origin exactly: another scheme, host or port is another server.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:  # a port that is not a number: matches nothing
        port = -1
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (127.0.0.0/8, ::1 or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sends_in_clear(url: str) -> bool:
    """Whether credentials sent to ``url`` would cross a network unencrypted."""
    return urlsplit(url).scheme.lower() != "https" and not is_loopback(url)


@dataclass(frozen=True)
class SasCredentials:
    """HTTP Basic credentials and the only origin they may be sent to."""

    origin: str
    username: str
    password: str = field(repr=False)

    def applies_to(self, url: str) -> bool:
        """Whether ``url`` is on this origin (scheme, host and port)."""
        return origin_of(url) == self.origin

    @property
    def basic_auth(self) -> tuple[str, str]:
        """(user, password), as requests takes them."""
        return self.username, self.password


def strip_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part, which is remembered for its origin."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    with _lock:
        _by_origin[origin_of(url)] = (unquote(parts.username), unquote(parts.password or ""))
    return redact_url(url)


def credentials_for(url: str) -> SasCredentials | None:
    """The credentials that may be sent to ``url``'s origin, if any.

    Those given in a URL for this origin come first; then ``MANGA_SAS_USERNAME`` and
    ``MANGA_SAS_PASSWORD``, if ``url`` is on the origin of ``MANGA_SAS_URL``.

    Raises
    ------
    InsecureCredentialsError
        If there are credentials for ``url`` but it is plain ``http://`` to a host that is not
        loopback: they would cross the network readable by anyone on the way.
    """
    origin = origin_of(url)
    with _lock:
        remembered = _by_origin.get(origin)
    found = remembered or _environment_credentials_for(origin)
    if found is None:
        return None
    if sends_in_clear(url):
        raise InsecureCredentialsError(
            f"refusing to send SAS credentials to {redact_url(url)} over plain http://: anyone "
            f"on the way could read them. Use an https:// {SAS_URL_ENV}, or unset "
            f"{USERNAME_ENV} and {PASSWORD_ENV} (and any user:password@ in the URL) for a "
            "server that needs none"
        )
    return SasCredentials(origin, *found)


def _environment_credentials_for(origin: str) -> tuple[str, str] | None:
    user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if not (user or password):
        return None
    if not (user and password):
        logger.warning(
            "only one of %s and %s is set; ignoring it (falling back to ~/.netrc)",
            USERNAME_ENV,
            PASSWORD_ENV,
        )
        return None
    sas_url = os.environ.get(SAS_URL_ENV, DEFAULT_SAS_URL)
    return (user, password) if origin_of(sas_url) == origin else None
