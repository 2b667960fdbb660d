"""The record kept beside each downloaded file, and the names of a download's temporary files.

For ``x.fits.gz`` the downloader writes ``x.fits.gz.part`` while streaming (renamed to
``x.fits.gz`` only once validated) and ``x.fits.gz.meta.json`` afterwards: the URL, size, SHA-256
and the server's ETag and Last-Modified, which let the next run ask the server whether the file
changed (a conditional GET) instead of downloading it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from manga_assets.atomic import write_text

PART_SUFFIX = ".part"
RECORD_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class DownloadRecord:
    """What is known about a downloaded file, as stored in its ``.meta.json`` sidecar.

    Attributes
    ----------
    url : str
        Where it was downloaded from.
    bytes : int
        Size of the file.
    sha256 : str
        Hex SHA-256 of the file.
    etag, last_modified : str or None
        The server's validators for that version of the file, if it sent them.
    """

    url: str
    bytes: int
    sha256: str
    etag: str | None
    last_modified: str | None


def part_path(dest: Path) -> Path:
    """The temporary file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + PART_SUFFIX)


def record_path(dest: Path) -> Path:
    """The sidecar that describes ``dest``."""
    return dest.with_name(dest.name + RECORD_SUFFIX)


def read_record(dest: Path) -> DownloadRecord | None:
    """The sidecar of ``dest`` if both exist and the file still has the recorded size.

    Returns None for anything less (no file, no or unreadable sidecar, size changed), which the
    downloader treats as "no usable local copy".
    """
    try:
        size = dest.stat().st_size
        fields = json.loads(record_path(dest).read_text(encoding="utf-8"))
        record = DownloadRecord(
            url=str(fields["url"]),
            bytes=int(fields["bytes"]),
            sha256=str(fields["sha256"]),
            etag=fields.get("etag"),
            last_modified=fields.get("last_modified"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.bytes == size else None


def write_record(dest: Path, record: DownloadRecord) -> None:
    """Write the sidecar of ``dest`` atomically and durably."""
    # A unique temporary name: two downloads of the same file never write into each other's.
    write_text(record_path(dest), json.dumps(asdict(record), indent=1) + "\n", durable=True)
