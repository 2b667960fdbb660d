"""Probing a SAS for releases that are not configured yet (internal or future ones)."""

from __future__ import annotations

import requests


def release_url(sas_url: str, name: str) -> str:
    """The MaNGA folder of release ``name`` under a SAS root ('.../dr19/manga/')."""
    return f"{sas_url.rstrip('/')}/{name.lower()}/manga/"


def release_available(
    sas_url: str, name: str, *, timeout: float = 10.0, auth: tuple[str, str] | None = None
) -> bool:
    """Whether the SAS has a MaNGA folder for release ``name``.

    401 and 403 count as present: a proprietary release exists before one may read it. Any other
    answer, or none, counts as absent; a watch must never fail a sensor tick.
    """
    try:
        response = requests.head(
            release_url(sas_url, name), timeout=timeout, allow_redirects=True, auth=auth
        )
    except requests.RequestException:
        return False
    return response.status_code in (200, 401, 403)
