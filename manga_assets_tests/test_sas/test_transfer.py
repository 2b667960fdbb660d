"""Downloader behaviour against the loopback mirror, one scenario per test."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from manga_assets.mirror.server import MirrorServer
from manga_assets.mirror.transfer_faults import Fault
from manga_assets.sas.transfer import (
    Downloader,
    ProgressEvent,
    ServerUnreachable,
    check_server,
    tqdm_progress,
)
from manga_assets_tests.test_sas.conftest import MAPS_PATH, Mirror, fits_gz, fits_header


def fast_downloader(**overrides: object) -> Downloader:
    """A downloader with test-sized timeouts and backoff (milliseconds, not seconds)."""
    settings: dict[str, object] = dict(
        max_workers=4, connect_timeout=2.0, read_timeout=2.0, max_retries=3, backoff_s=0.005
    )
    settings.update(overrides)
    return Downloader(**settings)  # type: ignore[arg-type]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def maps(mirror: Mirror) -> tuple[str, bytes]:
    """URL and content of one MAPS-like file on the mirror."""
    content = fits_gz()
    return mirror.put(MAPS_PATH, content), content


# -- success and revalidation --------------------------------------------------------------------


def test_download_writes_validated_file_with_sha256_and_sidecar(maps, tmp_path):
    url, content = maps
    dest = tmp_path / "local" / "maps.fits.gz"
    with fast_downloader() as downloader:
        result = downloader.fetch(url, dest)

    assert (result.status, result.reason, result.fetched) == ("ok", "", True)
    assert dest.read_bytes() == content
    assert result.bytes == len(content)
    assert result.sha256 == sha256(content)
    sidecar = json.loads((tmp_path / "local" / "maps.fits.gz.meta.json").read_text())
    assert sidecar["url"] == url
    assert sidecar["bytes"] == len(content)
    assert sidecar["sha256"] == sha256(content)
    assert sidecar["etag"].startswith('"') and sidecar["last_modified"].endswith("GMT")
    assert not (tmp_path / "local" / "maps.fits.gz.part").exists()


def test_second_fetch_is_a_conditional_304_that_leaves_the_file_untouched(mirror, maps, tmp_path):
    url, content = maps
    dest = tmp_path / "maps.fits.gz"
    with fast_downloader() as downloader:
        first = downloader.fetch(url, dest)
        before = dest.stat()
        second = downloader.fetch(url, dest)

    after = dest.stat()
    assert second.status == "ok" and second.fetched is False
    assert (second.bytes, second.sha256) == (first.bytes, first.sha256)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    log = mirror.requests_for(MAPS_PATH)
    assert [(e.status, e.conditional, e.bytes_sent) for e in log] == [
        (200, False, len(content)),
        (304, True, 0),
    ]


def test_file_changed_on_the_server_is_downloaded_again(mirror, maps, tmp_path):
    url, _ = maps
    dest = tmp_path / "maps.fits.gz"
    reprocessed = fits_gz(seed=1)
    with fast_downloader() as downloader:
        downloader.fetch(url, dest)
        mirror.put(MAPS_PATH, reprocessed)
        # A reprocessed file gets a new mtime; make it differ even on coarse file systems.
        os.utime(mirror.root / MAPS_PATH, (time.time() + 10, time.time() + 10))
        result = downloader.fetch(url, dest)

    assert result.status == "ok" and result.fetched is True
    assert dest.read_bytes() == reprocessed
    assert result.sha256 == sha256(reprocessed)
    assert json.loads(dest.with_name(dest.name + ".meta.json").read_text())["sha256"] == sha256(
        reprocessed
    )
    assert [e.status for e in mirror.requests_for(MAPS_PATH)] == [200, 200]


def test_without_revalidation_a_present_file_costs_no_request(mirror, maps, tmp_path):
    url, _ = maps
    dest = tmp_path / "maps.fits.gz"
    with fast_downloader(revalidate=False) as downloader:
        downloader.fetch(url, dest)
        result = downloader.fetch(url, dest)

    assert result.status == "ok" and result.fetched is False
    assert len(mirror.requests_for(MAPS_PATH)) == 1


def test_local_file_of_the_wrong_size_is_downloaded_again_even_without_revalidation(
    mirror, maps, tmp_path
):
    url, content = maps
    dest = tmp_path / "maps.fits.gz"
    with fast_downloader(revalidate=False) as downloader:
        downloader.fetch(url, dest)
        dest.write_bytes(content[:1000])  # damaged locally after the download
        result = downloader.fetch(url, dest)

    assert result.fetched is True and dest.read_bytes() == content
    assert len(mirror.requests_for(MAPS_PATH)) == 2


# -- server answers ------------------------------------------------------------------------------


def test_404_is_missing_and_not_retried(mirror, tmp_path):
    with fast_downloader() as downloader:
        result = downloader.fetch(mirror.url(MAPS_PATH), tmp_path / "maps.fits.gz")

    assert result.status == "missing"
    assert "HTTP 404" in result.reason and mirror.url(MAPS_PATH) in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 1
    assert list(tmp_path.glob("maps*")) == []


def test_server_errors_are_retried_until_success(mirror, maps, tmp_path):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.http(500), Fault.http(503))
    with fast_downloader() as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "ok" and result.sha256 == sha256(content)
    assert [e.status for e in mirror.requests_for(MAPS_PATH)] == [500, 503, 200]


def test_persistent_server_errors_end_as_error_after_max_retries(mirror, maps, tmp_path):
    url, _ = maps
    mirror.faults.add(MAPS_PATH, *[Fault.http(503)] * 10)
    with fast_downloader(max_retries=2) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "error"
    assert "HTTP 503" in result.reason and "3 attempts" in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 3
    assert not (tmp_path / "maps.fits.gz").exists()


# -- interrupted transfers -------------------------------------------------------------------------


def test_stalled_transfer_times_out_and_resumes(mirror, maps, tmp_path):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.stall(seconds=5, fraction=0.5))
    started = time.monotonic()
    with fast_downloader(read_timeout=0.4) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert time.monotonic() - started < 4, "the client waited for the stall instead of timing out"
    assert result.status == "ok" and result.sha256 == sha256(content)
    first, second = mirror.requests_for(MAPS_PATH)
    assert second.status == 206 and second.range is not None
    assert second.bytes_sent < len(content)


def test_connection_reset_mid_body_resumes_with_a_range_request(mirror, maps, tmp_path):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.reset(fraction=0.6))
    dest = tmp_path / "maps.fits.gz"
    with fast_downloader() as downloader:
        result = downloader.fetch(url, dest)

    assert result.status == "ok"
    assert dest.read_bytes() == content and result.sha256 == sha256(content)
    first, second = mirror.requests_for(MAPS_PATH)
    assert first.status == 200 and first.bytes_sent < len(content)
    offset = len(content) - second.bytes_sent
    assert second.status == 206 and second.range == f"bytes={offset}-"
    assert 0 < offset <= first.bytes_sent


def test_interrupted_download_leaves_a_part_file_that_the_next_fetch_resumes(
    mirror, maps, tmp_path
):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.reset(fraction=0.8))
    dest = tmp_path / "maps.fits.gz"
    part = tmp_path / "maps.fits.gz.part"
    with fast_downloader(max_retries=0) as downloader:
        failed = downloader.fetch(url, dest)
    assert failed.status == "error" and "reset" in failed.reason
    assert not dest.exists(), "a partial download must never sit under the product's name"
    kept = part.stat().st_size
    assert 0 < kept < len(content)

    with fast_downloader() as downloader:  # a new process, in effect
        resumed = downloader.fetch(url, dest)

    assert resumed.status == "ok" and dest.read_bytes() == content
    assert not part.exists()
    last = mirror.requests_for(MAPS_PATH)[-1]
    assert (last.status, last.range, last.bytes_sent) == (
        206,
        f"bytes={kept}-",
        len(content) - kept,
    )


def test_part_file_that_does_not_fit_the_server_file_is_discarded(mirror, maps, tmp_path):
    url, content = maps
    dest = tmp_path / "maps.fits.gz"
    (tmp_path / "maps.fits.gz.part").write_bytes(b"x" * (len(content) + 10))
    with fast_downloader() as downloader:
        result = downloader.fetch(url, dest)

    assert result.status == "ok" and dest.read_bytes() == content
    assert [e.status for e in mirror.requests_for(MAPS_PATH)] == [416, 200]


def test_content_length_lie_is_retried(mirror, maps, tmp_path):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.lying_length(extra_bytes=5000))
    with fast_downloader() as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "ok" and result.sha256 == sha256(content)
    assert len(mirror.requests_for(MAPS_PATH)) == 2


def test_content_length_lie_on_every_attempt_is_corrupt(mirror, maps, tmp_path):
    url, _ = maps
    mirror.faults.add(MAPS_PATH, *[Fault.lying_length()] * 3)
    out = tmp_path / "out"
    with fast_downloader(max_retries=2) as downloader:
        result = downloader.fetch(url, out / "maps.fits.gz")

    assert result.status == "corrupt"
    assert "announced" in result.reason and "identical content twice" in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 2, "the same bad bytes twice end the retries"
    assert list(out.iterdir()) == [], "nothing of a corrupt download may remain"


# -- content validation --------------------------------------------------------------------------


def test_truncated_gzip_on_the_server_is_corrupt(mirror, tmp_path):
    truncated = fits_gz()[:-5000]
    url = mirror.put(MAPS_PATH, truncated)
    out = tmp_path / "out"
    with fast_downloader(max_retries=3) as downloader:
        result = downloader.fetch(url, out / "maps.fits.gz")

    assert result.status == "corrupt"
    assert "gzip" in result.reason and "truncated" in result.reason
    assert "2 attempts" in result.reason and "identical content twice" in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 2
    assert list(out.iterdir()) == []


def test_invalid_content_that_differs_each_time_is_retried_max_retries_times(
    mirror, maps, tmp_path
):
    url, _ = maps
    mirror.faults.add(MAPS_PATH, *(Fault.truncated(f) for f in (0.5, 0.6, 0.7, 0.8)))
    with fast_downloader(max_retries=2) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "corrupt" and "3 attempts" in result.reason
    assert len(mirror.requests_for(MAPS_PATH)) == 3


def test_gzip_with_a_wrong_crc_is_corrupt(mirror, tmp_path):
    content = bytearray(fits_gz())
    content[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    url = mirror.put(MAPS_PATH, bytes(content))
    with fast_downloader(max_retries=0) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "corrupt" and "incorrect data check" in result.reason


def test_truncated_body_from_the_server_is_caught_and_retried(mirror, maps, tmp_path):
    url, content = maps
    mirror.faults.add(MAPS_PATH, Fault.truncated(fraction=0.7))
    with fast_downloader() as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "ok" and result.sha256 == sha256(content)
    first, second = mirror.requests_for(MAPS_PATH)
    assert (first.status, second.status, second.range) == (200, 200, None)


def test_content_that_is_not_gzip_under_a_gz_name_is_corrupt(mirror, tmp_path):
    url = mirror.put(MAPS_PATH, fits_header() + b"\0" * 5000)
    with fast_downloader(max_retries=0) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "corrupt" and "not a valid gzip stream" in result.reason
    assert not (tmp_path / "maps.fits.gz").exists()


def test_gzip_that_is_not_fits_under_a_fits_name_is_corrupt(mirror, tmp_path):
    url = mirror.put(MAPS_PATH, gzip.compress(b"<html>Service Unavailable</html>"))
    with fast_downloader(max_retries=0) as downloader:
        result = downloader.fetch(url, tmp_path / "maps.fits.gz")

    assert result.status == "corrupt" and "SIMPLE  =" in result.reason


# -- many files ----------------------------------------------------------------------------------


def test_fetch_many_returns_results_in_input_order_and_reports_progress(mirror, tmp_path):
    names = [f"dr17/manga/f{index:02d}.fits.gz" for index in range(12)]
    contents = {name: fits_gz(20_000, seed=index) for index, name in enumerate(names)}
    jobs = [(mirror.put(name, data), tmp_path / Path(name).name) for name, data in contents.items()]
    jobs.insert(5, (mirror.url("dr17/manga/absent.fits.gz"), tmp_path / "absent.fits.gz"))
    events: list[ProgressEvent] = []
    with fast_downloader(max_workers=4) as downloader:
        results = downloader.fetch_many(jobs, on_progress=events.append)

    assert [r.url for r in results] == [url for url, _ in jobs]
    assert [r.status for r in results].count("ok") == 12
    assert results[5].status == "missing"
    assert [e.done for e in events] == list(range(1, 14))
    assert events[-1].total == 13 and events[-1].failed == 1 and events[-1].fetched == 12
    assert events[-1].bytes == sum(len(data) for data in contents.values())
    assert "13/13 files" in events[-1].summary()


def test_concurrency_never_exceeds_max_workers(tmp_path):
    root = tmp_path / "sas"
    for index in range(16):
        (root / "dr17").mkdir(parents=True, exist_ok=True)
        (root / "dr17" / f"f{index}.fits.gz").write_bytes(fits_gz(5_000, seed=index))
    with MirrorServer(root, latency_s=0.05) as server, fast_downloader(max_workers=3) as downloader:
        jobs = [(f"{server.url}/dr17/f{i}.fits.gz", tmp_path / f"f{i}.fits.gz") for i in range(16)]
        results = downloader.fetch_many(jobs)
        observed = server.max_concurrent_requests

    assert all(r.ok for r in results)
    assert observed <= 3
    assert observed >= 2, "downloads did not overlap at all"


def test_duplicate_destinations_are_refused(tmp_path):
    dest = tmp_path / "a.fits.gz"
    with fast_downloader() as downloader, pytest.raises(ValueError, match="same file"):
        downloader.fetch_many([("http://127.0.0.1:1/sas/a", dest), ("http://127.0.0.1:1/b", dest)])


# -- credentials ----------------------------------------------------------------------------------

USER, PASSWORD = "alice", "pa55-w0rd-never-logged"


@pytest.fixture
def private_mirror(tmp_path: Path):
    root = tmp_path / "sas"
    (root / "dr17").mkdir(parents=True)
    (root / "dr17" / "x.fits.gz").write_bytes(fits_gz(10_000))
    log_path = tmp_path / "access.log"
    with MirrorServer(root, access_log=log_path, credentials=(USER, PASSWORD)) as server:
        yield server, log_path


def test_credentials_from_the_environment_are_sent_and_never_logged(
    private_mirror, tmp_path, monkeypatch, caplog
):
    server, log_path = private_mirror
    monkeypatch.setenv("MANGA_SAS_URL", server.url)  # the origin the credentials are for
    monkeypatch.setenv("MANGA_SAS_USERNAME", USER)
    monkeypatch.setenv("MANGA_SAS_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    jobs = [
        (f"{server.url}/dr17/x.fits.gz", tmp_path / "x.fits.gz"),
        (f"{server.url}/dr17/absent.fits.gz", tmp_path / "absent.fits.gz"),
    ]
    with fast_downloader() as downloader:
        ok, missing = downloader.fetch_many(jobs)
        text = repr(downloader)

    assert ok.status == "ok" and missing.status == "missing"
    server.wait_idle()
    assert {line.split("\t")[-1] for line in log_path.read_text().splitlines()} == {USER}
    assert caplog.records, "expected some log output to check"
    for output in (
        caplog.text,
        text,
        ok.reason,
        missing.reason,
        (tmp_path / "x.fits.gz.meta.json").read_text(),
    ):
        assert PASSWORD not in output


def test_refused_credentials_are_an_error_that_says_what_to_check(
    private_mirror, tmp_path, monkeypatch, caplog
):
    server, log_path = private_mirror
    monkeypatch.setenv("MANGA_SAS_URL", server.url)
    monkeypatch.setenv("MANGA_SAS_USERNAME", USER)
    monkeypatch.setenv("MANGA_SAS_PASSWORD", "wrong-" + PASSWORD)
    caplog.set_level(logging.DEBUG)
    with fast_downloader() as downloader:
        result = downloader.fetch(f"{server.url}/dr17/x.fits.gz", tmp_path / "x.fits.gz")

    assert result.status == "error"
    assert "HTTP 401" in result.reason and "MANGA_SAS_USERNAME" in result.reason
    server.wait_idle()
    assert len(log_path.read_text().splitlines()) == 1, "a refused login must not be retried"
    assert PASSWORD not in caplog.text and PASSWORD not in result.reason


# -- unreachable server ---------------------------------------------------------------------


@pytest.fixture
def dead_url() -> str:
    """A loopback URL on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/sas"


def test_check_server_names_the_url_and_what_to_check(dead_url):
    with pytest.raises(ServerUnreachable, match="MANGA_SAS_URL") as failure:
        check_server(dead_url, timeout=2)
    assert dead_url in str(failure.value) and "refused" in str(failure.value)


def test_check_server_accepts_any_http_answer(mirror):
    check_server(mirror.server.url)  # the SAS root itself is a 404 here, but the host answers


def test_an_unreachable_server_ends_the_whole_batch_quickly(dead_url, tmp_path):
    jobs = [(f"{dead_url}/dr17/f{i}.fits.gz", tmp_path / f"f{i}.fits.gz") for i in range(200)]
    started = time.monotonic()
    with fast_downloader(max_workers=4, max_retries=3) as downloader:
        results = downloader.fetch_many(jobs)

    assert time.monotonic() - started < 10
    assert {r.status for r in results} == {"error"}
    assert all("MANGA_SAS_URL" in r.reason for r in results)
    assert sum("skipped" in r.reason for r in results) >= 190
    assert not any(tmp_path.iterdir())


# -- local failures, cancellation, progress bar ------------------------------------------------


def test_a_destination_that_cannot_be_written_is_an_error_for_that_file_only(maps, tmp_path):
    url, _ = maps
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with fast_downloader() as downloader:
        bad, good = downloader.fetch_many(
            [(url, blocker / "maps.fits.gz"), (url, tmp_path / "maps.fits.gz")]
        )

    assert bad.status == "error" and "cannot write" in bad.reason
    assert good.status == "ok"


def test_an_exception_in_the_progress_callback_stops_the_batch(tmp_path):
    root = tmp_path / "sas"
    (root / "dr17").mkdir(parents=True)
    for index in range(30):
        (root / "dr17" / f"f{index}.fits.gz").write_bytes(fits_gz(2_000, seed=index))

    def stop_at_first(event: ProgressEvent) -> None:
        raise KeyboardInterrupt

    with MirrorServer(root, latency_s=0.05) as server, fast_downloader(max_workers=2) as dl:
        jobs = [(f"{server.url}/dr17/f{i}.fits.gz", tmp_path / f"f{i}.fits.gz") for i in range(30)]
        with pytest.raises(KeyboardInterrupt):
            dl.fetch_many(jobs, on_progress=stop_at_first)
        requested = server.request_count

    assert requested <= 4, f"{requested} requests were made after the interruption"


def test_tqdm_progress_draws_a_bar(mirror, maps, tmp_path, capsys):
    url, _ = maps
    with fast_downloader() as downloader, tqdm_progress(1, desc="maps") as bar:
        downloader.fetch_many([(url, tmp_path / "maps.fits.gz")], on_progress=bar)
    err = capsys.readouterr().err
    assert "maps" in err and "1/1" in err and "0 failed" in err
