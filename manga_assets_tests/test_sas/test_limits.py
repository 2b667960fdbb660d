"""Downloads with limits: a deadline per file, a size cap, and a full disk that keeps nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from manga_assets.sas.sidecar import part_path
from manga_assets.sas.transfer import Downloader
from manga_assets.settings import Settings
from manga_assets_tests.test_sas.conftest import MAPS_PATH, Mirror, ScriptedServer, fits_gz


def downloader(**overrides: object) -> Downloader:
    options: dict[str, object] = dict(
        max_workers=1, connect_timeout=2.0, read_timeout=2.0, max_retries=2, backoff_s=0.005
    )
    options.update(overrides)
    return Downloader(**options)  # type: ignore[arg-type]


def trickle(seconds: float, announced: int = 100_000):
    """An answer that sends one byte every 50 ms (inside any read timeout) for ``seconds``."""

    def answer(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(announced))
        handler.end_headers()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            handler.wfile.write(b"\x1f")
            handler.wfile.flush()
            time.sleep(0.05)
        handler.close_connection = True

    return answer


def test_a_trickling_server_is_cut_off_at_the_deadline(tmp_path):
    with ScriptedServer(trickle(seconds=6)) as server, downloader(deadline_s=1.0) as client:
        started = time.monotonic()
        result = client.fetch(f"{server.url}/sas/x.fits.gz", tmp_path / "x.fits.gz")
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the download held its worker for {elapsed:.1f} s"
    assert result.status == "error"
    assert "not finished within the 1 s" in result.reason
    assert "MANGA_DOWNLOAD_DEADLINE_S" in result.reason
    assert not (tmp_path / "x.fits.gz").exists()


def test_a_file_announced_over_the_cap_is_refused_without_reading_it(mirror: Mirror, tmp_path):
    url = mirror.put(MAPS_PATH, fits_gz(20_000))
    with downloader(max_bytes=10_000) as client:
        result = client.fetch(url, tmp_path / "maps.fits.gz")
    assert result.status == "corrupt"
    assert "larger than the 10000 bytes" in result.reason
    assert "MANGA_DOWNLOAD_MAX_MB" in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 1, "a size refusal is not retried"
    assert not part_path(tmp_path / "maps.fits.gz").exists()


def test_a_body_without_a_length_is_cut_at_the_cap(tmp_path):
    def unannounced(handler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(fits_gz(50_000))
        handler.close_connection = True

    with ScriptedServer(unannounced) as server, downloader(max_bytes=10_000) as client:
        result = client.fetch(f"{server.url}/sas/x.fits.gz", tmp_path / "x.fits.gz")
    assert result.status == "corrupt" and "more arrived" in result.reason
    assert not part_path(tmp_path / "x.fits.gz").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_removes_the_part_file(mirror: Mirror, tmp_path):
    url = mirror.put(MAPS_PATH, fits_gz())
    dest = tmp_path / "maps.fits.gz"
    # Every write through this .part fails with ENOSPC, as on a full disk.
    part_path(dest).symlink_to("/dev/full")
    with downloader() as client:
        result = client.fetch(url, dest)
    assert result.status == "error" and "disk full" in result.reason
    assert not part_path(dest).is_symlink() and not part_path(dest).exists()
    assert not dest.exists()


def test_the_limits_are_settings(monkeypatch):
    monkeypatch.setenv("MANGA_DOWNLOAD_DEADLINE_S", "90")
    monkeypatch.setenv("MANGA_DOWNLOAD_MAX_MB", "512")
    settings = Settings.from_env()
    assert (settings.download_deadline_s, settings.download_max_mb) == (90.0, 512)
    monkeypatch.setenv("MANGA_DOWNLOAD_MAX_MB", "lots")
    with pytest.raises(ValueError, match="MANGA_DOWNLOAD_MAX_MB='lots' must be a positive int"):
        Settings.from_env()


def test_the_download_resource_passes_the_limits_on(tmp_path: Path):
    from manga_assets.defs.definitions import build_resources

    settings = Settings(
        sas_url="https://sas.example/sas", data_dir=tmp_path, download_deadline_s=5.0
    )
    sas = build_resources(settings)["sas"]
    with sas.downloader() as client:
        assert client.deadline_s == 5.0 and client.max_bytes == 4096 * 1024**2
