"""Credentials go only to the origin they were given for, never in clear, never into a message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from manga_assets.mirror.server import MirrorServer, read_access_log
from manga_assets.sas.credentials import (
    InsecureCredentialsError,
    credentials_for,
    origin_of,
    strip_credentials,
)
from manga_assets.sas.network import host_of, redact_url
from manga_assets.sas.transfer import Downloader
from manga_assets_tests.test_sas.conftest import ScriptedServer, fits_gz

USER, PASSWORD = "alice", "pa55-w0rd-never-logged"


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch):
    for name in ("MANGA_SAS_URL", "MANGA_SAS_USERNAME", "MANGA_SAS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def environment_credentials(monkeypatch, sas_url: str) -> None:
    monkeypatch.setenv("MANGA_SAS_URL", sas_url)
    monkeypatch.setenv("MANGA_SAS_USERNAME", USER)
    monkeypatch.setenv("MANGA_SAS_PASSWORD", PASSWORD)


def quick_downloader() -> Downloader:
    return Downloader(max_workers=1, connect_timeout=2, read_timeout=2, max_retries=0)


def served_tree(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    (root / "dr17").mkdir(parents=True)
    (root / "dr17" / "x.fits.gz").write_bytes(fits_gz(1000))
    return root


# -- origins --------------------------------------------------------------------------------


def test_an_explicit_default_port_is_the_same_origin(monkeypatch):
    assert origin_of("https://SAS.example:443/sas") == origin_of("https://sas.example/sas/x")
    assert origin_of("http://h/") != origin_of("https://h/")
    environment_credentials(monkeypatch, "https://sas.example:443/sas")
    assert credentials_for("https://sas.example/sas/dr17/x.fits.gz") is not None
    strip_credentials(f"https://{USER}:{PASSWORD}@url-given.example/sas")
    assert credentials_for("https://url-given.example:443/sas/x").username == USER


def test_environment_credentials_belong_to_the_origin_of_manga_sas_url(monkeypatch):
    environment_credentials(monkeypatch, "https://data.sdss.org/sas")
    assert credentials_for("https://data.sdss.org/sas/dr17/x").basic_auth == (USER, PASSWORD)
    for elsewhere in (
        "https://evil.example/sas/x",
        "https://data.sdss.org:8443/sas/x",
        "https://data.sdss.org.evil.example/sas/x",
    ):
        assert credentials_for(elsewhere) is None, elsewhere


def test_environment_credentials_are_not_sent_to_another_server(tmp_path, monkeypatch):
    log = tmp_path / "other.log"
    with (
        MirrorServer(served_tree(tmp_path, "own"), credentials=(USER, PASSWORD)) as own,
        MirrorServer(served_tree(tmp_path, "other"), access_log=log) as other,
    ):
        environment_credentials(monkeypatch, own.url)
        with quick_downloader() as downloader:
            mine = downloader.fetch(f"{own.url}/dr17/x.fits.gz", tmp_path / "mine.fits.gz")
            theirs = downloader.fetch(f"{other.url}/dr17/x.fits.gz", tmp_path / "theirs.fits.gz")
        other.wait_idle()
    assert mine.ok and theirs.ok
    assert [entry.user for entry in read_access_log(log)] == [None]


# -- plain http -----------------------------------------------------------------------------


def test_credentials_are_refused_over_plain_http_off_loopback(tmp_path, monkeypatch):
    environment_credentials(monkeypatch, "http://sas.example/sas")
    with pytest.raises(InsecureCredentialsError, match="plain http://"):
        credentials_for("http://sas.example/sas/x")
    with quick_downloader() as downloader:
        # Refused before any connection is tried (sas.example does not resolve here anyway).
        result = downloader.fetch("http://sas.example/sas/x.fits.gz", tmp_path / "x.fits.gz")
    assert result.status == "error" and "plain http://" in result.reason
    assert PASSWORD not in result.reason


def test_credentials_may_go_over_http_to_loopback(monkeypatch):
    for url in ("http://127.0.0.1:8080/sas", "http://localhost:8080/sas", "http://[::1]:80/sas"):
        environment_credentials(monkeypatch, url)
        assert credentials_for(url + "/x") is not None, url


# -- redirects ------------------------------------------------------------------------------


def redirect_to(location: str):
    def answer(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def test_a_redirect_to_another_origin_is_refused_and_nothing_is_stored(tmp_path, monkeypatch):
    log = tmp_path / "elsewhere.log"
    with MirrorServer(served_tree(tmp_path, "elsewhere"), access_log=log) as elsewhere:
        target = f"{elsewhere.url}/dr17/x.fits.gz"
        with ScriptedServer(redirect_to(target)) as own:
            environment_credentials(monkeypatch, own.url + "/sas")
            with quick_downloader() as downloader:
                result = downloader.fetch(f"{own.url}/sas/dr17/x.fits.gz", tmp_path / "x.fits.gz")
        elsewhere.wait_idle()
        assert own.seen[0].authorization is not None, "the configured origin gets credentials"
    assert result.status == "error"
    assert "redirects to another server" in result.reason and "MANGA_SAS_URL" in result.reason
    assert not (tmp_path / "x.fits.gz").exists()
    assert not log.exists() or read_access_log(log) == [], "the other server was never asked"


def test_a_redirect_within_the_origin_is_followed(tmp_path):
    content = fits_gz(1000)

    def answer(handler) -> None:
        if handler.path.endswith("/old/x.fits.gz"):
            return redirect_to("/sas/new/x.fits.gz")(handler)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    with ScriptedServer(answer) as server, quick_downloader() as downloader:
        result = downloader.fetch(f"{server.url}/sas/old/x.fits.gz", tmp_path / "x.fits.gz")
    assert result.ok, result.reason
    assert [seen.path for seen in server.seen] == ["/sas/old/x.fits.gz", "/sas/new/x.fits.gz"]


# -- messages -------------------------------------------------------------------------------


def test_redacting_keeps_an_ipv6_host_and_its_port():
    assert redact_url(f"http://{USER}:{PASSWORD}@[::1]:8080/sas/x") == "http://[::1]:8080/sas/x"
    assert host_of(f"http://{USER}:{PASSWORD}@[::1]:8080/sas/x") == "[::1]:8080"
    assert redact_url("https://[2001:db8::1]/sas") == "https://[2001:db8::1]/sas"


def test_no_password_reaches_the_log_when_a_download_fails(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:1/sas/x.fits.gz"  # nothing listens on port 1
    with quick_downloader() as downloader:
        result = downloader.fetch(url, tmp_path / "x.fits.gz")
    assert result.status == "error"
    assert PASSWORD not in caplog.text and PASSWORD not in result.reason
