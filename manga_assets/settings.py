"""The project's configuration, read from the environment in one place.

``MANGA_SAS_URL``  root of the SAS tree (default https://data.sdss.org/sas); a user:password@
                   part is split off and used only to authenticate (sas/credentials.py)
``MANGA_RELEASE``  DR17 (default) or DR15
``MANGA_DATA_DIR`` local SAS mirror under ``sas/``, products under ``products/`` (default ./data)
``MANGA_WATCH_RELEASES`` comma-separated release names to probe for (e.g. "DR18,MPL-12")
``MANGA_DOWNLOAD_DEADLINE_S`` seconds one file's download may take in all (default 3600)
``MANGA_DOWNLOAD_MAX_MB`` largest file accepted from the SAS, in MiB (default 4096)
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
# A slow but live server (1 MB/s) still delivers the largest DR17 catalogue well within the hour.
DEFAULT_DOWNLOAD_DEADLINE_S = 3600.0
# Far above any DR17 MAPS file or catalogue; bounds what a hostile server can make us store.
DEFAULT_DOWNLOAD_MAX_MB = 4096
# The most bytes one MAPS file may inflate to: ~30 times a DR17 127-fibre file.
DEFAULT_MAPS_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class Settings:
    """Where data come from and where they go."""

    sas_url: str = DEFAULT_SAS_URL
    release: str = DEFAULT_RELEASE
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    watch_releases: tuple[str, ...] = ()
    download_deadline_s: float = DEFAULT_DOWNLOAD_DEADLINE_S
    download_max_mb: int = DEFAULT_DOWNLOAD_MAX_MB
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
            download_deadline_s=_positive(
                "MANGA_DOWNLOAD_DEADLINE_S", float, DEFAULT_DOWNLOAD_DEADLINE_S
            ),
            download_max_mb=_positive("MANGA_DOWNLOAD_MAX_MB", int, DEFAULT_DOWNLOAD_MAX_MB),
            maps_max_bytes=_positive("MANGA_MAPS_MAX_BYTES", int, DEFAULT_MAPS_MAX_BYTES),
        )


def _positive(name: str, kind: type[float] | type[int], default: float) -> float | int:
    """A positive number from the environment variable ``name``, or ``default`` when unset."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be a positive {kind.__name__}")
    return value
