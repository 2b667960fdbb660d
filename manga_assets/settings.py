"""The project's configuration, read from the environment in one place.

``MANGA_SAS_URL``  root of the SAS tree (default https://data.sdss.org/sas); a user:password@
                   part is split off and used only to authenticate (sas/credentials.py)
``MANGA_RELEASE``  DR17 (default) or DR15
``MANGA_DATA_DIR`` local SAS mirror under ``sas/``, products under ``products/`` (default ./data)
``MANGA_WATCH_RELEASES`` comma-separated release names to probe for (e.g. "DR18,MPL-12")
``MANGA_MAPS_MAX_BYTES`` the most bytes one MAPS file may inflate to before the extensions the
                   pipeline reads (default 1 GiB, ~30 times a DR17 127-fibre file); a larger file
                   is recorded invalid, as a gzip bomb would be
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SAS_URL = "https://data.sdss.org/sas"
DEFAULT_RELEASE = "DR17"
DEFAULT_DATA_DIR = "./data"
# `manga-assets run` asks the server about a plate's MAPS files again only after this many hours.
REVALIDATE_AFTER_HOURS = 24.0
DEFAULT_MAPS_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class Settings:
    """Where data come from and where they go."""

    sas_url: str = DEFAULT_SAS_URL
    release: str = DEFAULT_RELEASE
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    watch_releases: tuple[str, ...] = ()
    maps_max_bytes: int = DEFAULT_MAPS_MAX_BYTES

    def __post_init__(self) -> None:
        # A user:password@ part never stays in the URL the rest of the process sees.
        from manga_assets.sas.credentials import strip_credentials

        object.__setattr__(self, "sas_url", strip_credentials(self.sas_url))

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the ``MANGA_*`` environment variables, defaults where unset."""
        return cls(
            sas_url=os.environ.get("MANGA_SAS_URL", DEFAULT_SAS_URL),
            release=os.environ.get("MANGA_RELEASE", DEFAULT_RELEASE).upper(),
            data_dir=Path(os.environ.get("MANGA_DATA_DIR", DEFAULT_DATA_DIR)).resolve(),
            watch_releases=tuple(
                name.strip()
                for name in os.environ.get("MANGA_WATCH_RELEASES", "").split(",")
                if name.strip()
            ),
            maps_max_bytes=_positive_int("MANGA_MAPS_MAX_BYTES", DEFAULT_MAPS_MAX_BYTES),
        )


def _positive_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"{name}={text!r} is not a positive whole number of bytes; unset it for {default}"
        )
    return value
