"""Resources: the SAS to download from and the data directory to write to."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from manga_assets.defs.step_lock import HoldsDataDirLock
from manga_assets.layout import DataLayout
from manga_assets.sas.credentials import credentials_for
from manga_assets.sas.releases import Release, get_release
from manga_assets.sas.transfer import Downloader
from manga_assets.settings import (
    DEFAULT_DOWNLOAD_DEADLINE_S,
    DEFAULT_DOWNLOAD_MAX_MB,
    DEFAULT_MAPS_MAX_BYTES,
)

if TYPE_CHECKING:
    from manga_assets.dap.fitsstream import FitsLimits


class SasResource(dg.ConfigurableResource):
    """The Science Archive Server (or a mirror of it) and how to download from it.

    ``sas_url`` never holds credentials (the settings split them off, see sas/credentials.py),
    so it is safe in the UI's resource configuration.
    """

    sas_url: str
    release: str
    max_workers: int = 8
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_retries: int = 4
    watch_releases: list[str] = []
    download_deadline_s: float = DEFAULT_DOWNLOAD_DEADLINE_S
    download_max_mb: int = DEFAULT_DOWNLOAD_MAX_MB

    def release_info(self) -> Release:
        return get_release(self.release)

    def url(self, location: str) -> str:
        """URL of a SAS-relative location ('dr17/manga/...')."""
        return f"{self.sas_url.rstrip('/')}/{location}"

    def downloader(self) -> Downloader:
        """A new downloader; use it in a ``with`` block so its connections close."""
        return Downloader(
            credentials=credentials_for(self.sas_url),
            max_workers=self.max_workers,
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            max_retries=self.max_retries,
            deadline_s=self.download_deadline_s,
            max_bytes=self.download_max_mb * 1024**2,
        )


class DataDirResource(HoldsDataDirLock, dg.ConfigurableResource):
    """``$MANGA_DATA_DIR``: the local SAS mirror and the products.

    A step that uses it holds the data directory's lock, shared
    (:mod:`manga_assets.defs.step_lock`).
    """

    data_dir: str
    # MANGA_MAPS_MAX_BYTES: how far a MAPS file may inflate before it is called hostile.
    maps_max_bytes: int = DEFAULT_MAPS_MAX_BYTES

    @property
    def layout(self) -> DataLayout:
        return DataLayout(Path(self.data_dir))

    @property
    def fits_limits(self) -> FitsLimits:
        """What the MAPS reader accepts from one file (see :class:`FitsLimits`)."""
        from manga_assets.dap.fitsstream import FitsLimits

        return FitsLimits(max_decompressed_bytes=self.maps_max_bytes)
