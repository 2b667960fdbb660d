"""Progress reporting for :meth:`~manga_assets.sas.transfer.Downloader.fetch_many`.

The downloader sends one :class:`ProgressEvent` per finished file; the command line draws it
with :func:`tqdm_progress`, and a Dagster asset can log ``event.summary()`` every N files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from manga_assets.sas.transfer import DownloadResult


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of :meth:`Downloader.fetch_many`, sent once per finished job.

    Attributes
    ----------
    done, total : int
        Jobs finished so far, and in all.
    bytes : int
        Sum of the sizes of the files finished ok (downloaded or already current).
    fetched : int
        Jobs that transferred their file (as opposed to finding it current).
    failed : int
        Jobs that finished with a status other than ok.
    result : DownloadResult
        The job that just finished.
    """

    done: int
    total: int
    bytes: int
    fetched: int
    failed: int
    result: DownloadResult

    def summary(self) -> str:
        """One line for a log, e.g. '120/600 files (118 downloaded), 2.10 GB, 2 failed'."""
        return (
            f"{self.done}/{self.total} files ({self.fetched} downloaded), "
            f"{format_bytes(self.bytes)}, {self.failed} failed"
        )


class ProgressCounter:
    """Running totals for ProgressEvent, updated in the calling thread."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = self.bytes = self.fetched = self.failed = 0
        self.last_summary = f"0/{total} files"

    def add(self, result: DownloadResult) -> ProgressEvent:
        self.done += 1
        if result.ok:
            self.bytes += result.bytes
            self.fetched += result.fetched
        else:
            self.failed += 1
        event = ProgressEvent(self.done, self.total, self.bytes, self.fetched, self.failed, result)
        self.last_summary = event.summary()
        return event


class TqdmProgress:
    """A ``fetch_many`` progress callback that draws a tqdm bar; use it as a context manager."""

    def __init__(self, total: int, desc: str = "SAS download") -> None:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only the command line draws bars

        self._bar = tqdm(total=total, desc=desc, unit="file")

    def __call__(self, event: ProgressEvent) -> None:
        self._bar.update(1)
        self._bar.set_postfix_str(f"{format_bytes(event.bytes)}, {event.failed} failed")

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tqdm_progress(total: int, desc: str = "SAS download") -> TqdmProgress:
    """A progress bar for ``total`` files, to pass as ``on_progress`` to ``fetch_many``."""
    return TqdmProgress(total, desc)


def format_bytes(count: int) -> str:
    """``count`` bytes in decimal units, e.g. '2.10 GB'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"
