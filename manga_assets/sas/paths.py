"""One place that builds MaNGA identifiers, file names and SAS paths.

Paths come from the sdss-access templates (``mangadap`` with ``mode="MAPS"``, ``drpall``,
``dapall``). sdss-access keeps global state: importing it creates ``$SAS_BASE_DIR`` and every
``Path`` rewrites release variables in ``os.environ``. It is therefore imported lazily, with
``SAS_BASE_DIR`` pointed at a harmless default, one ``Path`` per release, used from one thread.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from manga_assets.sas.releases import Release

_PLATEIFU = re.compile(r"^(?P<plate>[1-9][0-9]{3,4})-(?P<ifu>[1-9][0-9]{2,4})$")


@dataclass(frozen=True, order=True)
class PlateIFU:
    """A MaNGA plate-IFU designation such as ``8485-1901``.

    Only strings of the form ``<plate>-<ifudesign>`` with 4-5 digit plates and 3-5 digit IFU
    designs are accepted, so a value that reaches a file path can never climb out of it.
    """

    plate: int
    ifu: int

    @classmethod
    def parse(cls, text: str) -> PlateIFU:
        """Parse and validate ``text``.

        Raises
        ------
        ValueError
            If ``text`` is not a plate-IFU designation.
        """
        match = _PLATEIFU.match(str(text).strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not a MaNGA plate-IFU "
                "(expected '<plate>-<ifudesign>', e.g. '8485-1901')"
            )
        return cls(int(match["plate"]), int(match["ifu"]))

    def __str__(self) -> str:
        return f"{self.plate}-{self.ifu}"

    @property
    def ifu_size(self) -> int:
        """Number of fibres in the bundle, from the IFU design (1901 -> 19, 12701 -> 127)."""
        return self.ifu // 100


_current: dict[str, Any] = {}
_lock = threading.Lock()


def _sdss_path(release_name: str) -> Any:
    """The sdss-access ``Path`` of ``release_name``.

    A ``Path`` reads its release variables from ``os.environ`` when it builds a path, and creating
    one rewrites them, so one ``Path`` is kept, and replaced whenever another release is asked
    for. Callers hold ``_lock`` while they use it.
    """
    if _current.get("release") != release_name:
        os.environ.setdefault(
            "SAS_BASE_DIR", os.path.join(tempfile.gettempdir(), "manga_assets_sas")
        )
        from sdss_access import Path  # noqa: PLC0415 - global side effects, see module docstring

        _current["release"], _current["path"] = release_name, Path(release=release_name)
    return _current["path"]


def _location(release: Release, template: str, **keys: Any) -> str:
    with _lock:
        return _sdss_path(release.name).location(template, **keys)


def maps_location(release: Release, plateifu: PlateIFU, daptype: str | None = None) -> str:
    """SAS-relative path of a galaxy's DAP MAPS file ('dr17/manga/spectro/analysis/...')."""
    return _location(
        release,
        "mangadap",
        plate=plateifu.plate,
        ifu=plateifu.ifu,
        mode="MAPS",
        drpver=release.drpver,
        dapver=release.dapver,
        daptype=daptype or release.daptype,
    )


def drpall_location(release: Release) -> str:
    """SAS-relative path of the release's DRPall catalogue."""
    return _location(release, "drpall", drpver=release.drpver)


def dapall_location(release: Release) -> str:
    """SAS-relative path of the release's DAPall catalogue."""
    return _sdss_path(release.name).location("dapall", drpver=release.drpver, dapver=release.dapver)


def sas_url(sas_root_url: str, location: str) -> str:
    """URL of ``location`` under a SAS root such as ``https://data.sdss.org/sas``."""
    return f"{sas_root_url.rstrip('/')}/{location}"
