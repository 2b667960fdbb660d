"""The loopback SAS mirror: URL layout, HTTP semantics, confinement to its root, faults, log."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
import requests

from manga_assets.mirror.server import MirrorServer, read_access_log
from manga_assets.mirror.transfer_faults import Fault, FaultPlan
from manga_assets.sas.watch import release_available
from manga_assets_tests.test_sas.conftest import Mirror

FILE = "dr17/manga/spectro/redux/v3_1_1/drpall-v3_1_1.fits"
CONTENT = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


def raw_get(server: MirrorServer, path: str, headers: dict[str, str] | None = None):
    """GET ``path`` exactly as written (no client-side normalisation of '..' or escapes)."""
    port = urlsplit(server.url).port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def served(mirror: Mirror) -> str:
    return mirror.put(FILE, CONTENT)


def test_a_file_under_root_is_served_at_the_sas_url_with_validators(mirror, served):
    assert served == f"{mirror.server.url}/{FILE}"
    assert mirror.server.url.startswith("http://127.0.0.1:") and mirror.server.url.endswith("/sas")
    response = requests.get(served, timeout=5)

    assert response.status_code == 200 and response.content == CONTENT
    stat = (mirror.root / FILE).stat()
    assert response.headers["ETag"] == f'"{stat.st_size:x}-{stat.st_mtime_ns // 1000:x}"'
    assert response.headers["Last-Modified"] == formatdate(stat.st_mtime, usegmt=True)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(CONTENT))
    assert "Content-Encoding" not in response.headers


def test_head_sends_the_headers_without_a_body(served):
    response = requests.head(served, timeout=5)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(len(CONTENT))


@pytest.mark.parametrize(
    ("range_header", "expected"),
    [("bytes=10-19", (10, 20)), ("bytes=10240-", None), ("bytes=-5", (10235, 10240))],
)
def test_single_ranges(served, range_header, expected):
    response = requests.get(served, headers={"Range": range_header}, timeout=5)
    if expected is None:
        assert response.status_code == 416
        assert response.headers["Content-Range"] == f"bytes */{len(CONTENT)}"
        return
    start, stop = expected
    assert response.status_code == 206
    assert response.content == CONTENT[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(CONTENT)}"


@pytest.mark.parametrize("range_header", ["bytes=0-1,5-6", "bytes=abc", "lines=1-2", "bytes=9-3"])
def test_unsupported_or_malformed_ranges_get_the_whole_file(served, range_header):
    response = requests.get(served, headers={"Range": range_header}, timeout=5)
    assert response.status_code == 200 and response.content == CONTENT


def test_if_range_serves_the_range_only_for_the_same_version(served):
    etag = requests.head(served, timeout=5).headers["ETag"]
    same = requests.get(served, headers={"Range": "bytes=100-", "If-Range": etag}, timeout=5)
    other = requests.get(served, headers={"Range": "bytes=100-", "If-Range": '"0-0"'}, timeout=5)
    assert (same.status_code, same.content) == (206, CONTENT[100:])
    assert (other.status_code, other.content) == (200, CONTENT)


def test_conditional_requests(served, mirror):
    headers = requests.head(served, timeout=5).headers
    etag, last_modified = headers["ETag"], headers["Last-Modified"]

    def status(**request_headers: str) -> int:
        return requests.get(served, headers=request_headers, timeout=5).status_code

    assert status(**{"If-None-Match": etag}) == 304
    assert status(**{"If-None-Match": f'"other", W/{etag}'}) == 304
    assert status(**{"If-None-Match": '"other"'}) == 200
    assert status(**{"If-Modified-Since": last_modified}) == 304
    assert status(**{"If-Modified-Since": formatdate(0, usegmt=True)}) == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110).
    assert status(**{"If-None-Match": '"other"', "If-Modified-Since": last_modified}) == 200
    os.utime(mirror.root / FILE, (time.time() + 60, time.time() + 60))
    assert status(**{"If-None-Match": etag}) == 200, "a touched file must get a new ETag"


def test_paths_outside_the_root_are_404(mirror, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (mirror.root / "dr17").mkdir()
    (mirror.root / "dr17" / "link.txt").symlink_to(secret)
    attempts = [
        "/sas/../secret.txt",
        "/sas/dr17/../../secret.txt",
        "/sas/%2e%2e/secret.txt",
        "/sas/dr17/..%2f..%2fsecret.txt",
        "/sas/" + str(secret),
        "/sas//" + str(secret),
        "/sas/dr17/link.txt",
        "/secret.txt",
    ]
    for path in attempts:
        status, _, body = raw_get(mirror.server, path)
        assert status == 404, path
        assert b"do not serve" not in body


def test_missing_files_and_directories_are_404(mirror, served):
    assert requests.get(mirror.url("dr17/manga/absent.fits"), timeout=5).status_code == 404
    assert requests.get(mirror.url("dr18/manga/"), timeout=5).status_code == 404
    assert requests.get(mirror.server.url, timeout=5).status_code == 404


def test_folders_are_never_listed_but_are_known_to_exist(mirror, served):
    (mirror.root / "dr17" / "manga" / "unfinished.fits.gz.part").write_bytes(b"half")
    response = requests.get(mirror.url("dr17/manga/"), timeout=5)
    assert response.status_code == 403
    assert "spectro" not in response.text and ".part" not in response.text
    # A release watch still learns that the folder exists (403 counts as present).
    assert release_available(mirror.server.url, "DR17", timeout=5)
    assert not release_available(mirror.server.url, "DR18", timeout=5)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1:1", "[::1]"])
def test_requests_addressed_to_another_host_are_refused(mirror, served, host):
    response = requests.get(served, headers={"Host": host}, timeout=5)
    assert response.status_code == 421 and b"do not serve" not in response.content


def test_loopback_host_headers_are_served(mirror, served):
    port = mirror.server.url.split(":")[2].split("/")[0]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        response = requests.get(served, headers={"Host": host}, timeout=5)
        assert response.status_code == 200, host


def test_a_non_ascii_authorization_header_gets_401(tmp_path):
    (tmp_path / "f.txt").write_text("private")
    with MirrorServer(tmp_path, credentials=("alice", "secret")) as server:
        port = int(server.url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(
                b"GET /sas/f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Basic \xc3\xa9\xff\r\nConnection: close\r\n\r\n"
            )
            answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_hosts_other_than_loopback_are_refused(tmp_path, host):
    with pytest.raises(ValueError, match="loopback"):
        MirrorServer(tmp_path, host=host)


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(NotADirectoryError):
        MirrorServer(tmp_path / "absent")


def test_basic_authentication_when_credentials_are_set(tmp_path):
    (tmp_path / "f.txt").write_text("private")
    with MirrorServer(tmp_path, credentials=("alice", "secret")) as server:
        anonymous = requests.get(server.url + "/f.txt", timeout=5)
        wrong = requests.get(server.url + "/f.txt", auth=("alice", "nope"), timeout=5)
        right = requests.get(server.url + "/f.txt", auth=("alice", "secret"), timeout=5)
    assert anonymous.status_code == 401 and "Basic" in anonymous.headers["WWW-Authenticate"]
    assert wrong.status_code == 401
    assert (right.status_code, right.text) == (200, "private")


def test_access_log_has_one_entry_per_request(mirror, served):
    requests.get(served, headers={"Range": "bytes=0-9"}, auth=("bob", "pw"), timeout=5)
    requests.head(served, timeout=5)
    requests.get(mirror.url("dr17/absent"), headers={"If-None-Match": '"x"'}, timeout=5)
    mirror.server.wait_idle()

    entries = read_access_log(mirror.log_path)
    assert [(e.method, e.path, e.status, e.bytes_sent) for e in entries] == [
        ("GET", f"/sas/{FILE}", 206, 10),
        ("HEAD", f"/sas/{FILE}", 200, 0),
        ("GET", "/sas/dr17/absent", 404, 10),
    ]
    assert entries[0].range == "bytes=0-9" and entries[0].user == "bob"
    assert entries[1].range is None and entries[1].user is None
    assert [e.conditional for e in entries] == [False, False, True]
    assert "pw" not in mirror.log_path.read_text().split()


def test_faults_are_consumed_in_order_then_the_file_is_served(mirror, served):
    mirror.faults.add(FILE, Fault.http(503), Fault.http(404))
    statuses = [requests.get(served, timeout=5).status_code for _ in range(3)]
    assert statuses == [503, 404, 200]
    assert mirror.faults.remaining(FILE) == 0


def test_fault_plan_keys_ignore_a_leading_sas_prefix():
    plan = FaultPlan({"/sas/dr17/a": [Fault.reset()]})
    assert plan.remaining("dr17/a") == 1
    assert plan.take("dr17/a") == Fault.reset()
    assert plan.take("dr17/a") is None


def test_body_faults_cut_the_body_as_announced(mirror, served):
    mirror.faults.add(FILE, Fault.truncated(0.25), Fault.lying_length(100))
    status, headers, body = raw_get(mirror.server, f"/sas/{FILE}")
    assert (status, body) == (200, CONTENT[:2560])
    assert headers["Content-Length"] == "2560"

    port = urlsplit(mirror.server.url).port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", f"/sas/{FILE}")
    response = connection.getresponse()
    assert response.headers["Content-Length"] == str(len(CONTENT) + 100)
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    connection.close()


def test_the_server_is_quiet(mirror, served, capfd):
    mirror.faults.add(FILE, Fault.reset(fraction=0.5))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(served, timeout=5)
    requests.get(mirror.url("absent"), timeout=5)
    with socket.create_connection(("127.0.0.1", urlsplit(mirror.server.url).port)) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        sock.recv(1000)
    mirror.server.wait_idle()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_stop_closes_kept_alive_connections(tmp_path):
    (tmp_path / "f").write_text("x")
    session = requests.Session()
    with MirrorServer(tmp_path) as server:
        url = server.url + "/f"
        assert session.get(url, timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=5)
    session.close()


def test_concurrent_requests_are_counted(tmp_path):
    (tmp_path / "f").write_text("x")
    with MirrorServer(tmp_path, latency_s=0.2) as server:
        sessions = [requests.Session() for _ in range(3)]
        threads = [
            threading.Thread(target=s.get, args=(server.url + "/f",), kwargs={"timeout": 5})
            for s in sessions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.max_concurrent_requests == 3
        assert server.request_count == 3


def test_serve_forever_serves_until_interrupted(tmp_path):
    (tmp_path / "dr17").mkdir()
    (tmp_path / "dr17" / "f.txt").write_text("served")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import sys; from pathlib import Path; "
        "from manga_assets.mirror.server import serve_forever; "
        "serve_forever(Path(sys.argv[1]), int(sys.argv[2]), on_ready=lambda url: print(url, "
        "flush=True))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # What is under test is Ctrl-C in a terminal. A process started where SIGINT is ignored
        # (a background job, or a test session whose earlier tests left it so) would inherit
        # that and never see it: the full suite once timed out here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = process.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/sas"
        assert requests.get(url + "/dr17/f.txt", timeout=5).text == "served"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
