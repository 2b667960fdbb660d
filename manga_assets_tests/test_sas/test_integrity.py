"""Streaming content checks and the download sidecar record."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc

import pytest

from manga_assets.sas.integrity import ContentCheck
from manga_assets.sas.sidecar import DownloadRecord, read_record, record_path, write_record
from manga_assets_tests.test_sas.conftest import fits_gz, fits_header


def check(name: str, data: bytes, chunk: int = 1000) -> ContentCheck:
    content_check = ContentCheck(name)
    for offset in range(0, len(data), chunk):
        content_check.update(data[offset : offset + chunk])
    return content_check


def test_valid_fits_gz_passes_and_is_hashed():
    data = fits_gz(50_000)
    result = check("x.fits.gz", data)
    assert result.problem() is None
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == len(data)


@pytest.mark.parametrize("cut", [1, 4, 8, 500, 30_000])
def test_truncated_gzip_is_reported_wherever_it_is_cut(cut):
    result = check("x.fits.gz", fits_gz(50_000)[:-cut])
    assert result.problem() is not None and "gzip" in result.problem()


def test_concatenated_gzip_members_and_zero_padding_are_valid_gzip():
    data = gzip.compress(fits_header()) + gzip.compress(b"more") + b"\0" * 700
    assert check("x.fits.gz", data, chunk=7).problem() is None


def test_bytes_after_the_gzip_stream_are_reported():
    data = gzip.compress(fits_header()) + b"\0\0garbage"
    assert "after the end" in check("x.fits.gz", data).problem()


def test_plain_fits_is_checked_for_its_signature():
    assert check("x.fits", fits_header()).problem() is None
    assert "FITS header" in check("x.fits", b"<html>" + fits_header()).problem()
    assert check("notes.txt", b"anything").problem() is None
    assert check("empty.txt", b"").problem() == "the file is empty"


def test_highly_compressible_content_is_inflated_in_bounded_memory():
    data = gzip.compress(fits_header() + b"\0" * 50_000_000, compresslevel=1)
    tracemalloc.start()
    try:
        result = check("zeros.fits.gz", data, chunk=256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.problem() is None
    assert peak < 20_000_000, f"inflating 50 MB of zeros used {peak / 1e6:.0f} MB"


def test_sidecar_round_trip_and_size_guard(tmp_path):
    dest = tmp_path / "x.fits.gz"
    dest.write_bytes(b"12345")
    record = DownloadRecord("http://h/sas/x.fits.gz", 5, "ab" * 32, '"5-1"', "Thu, 01 Jan 1970")
    write_record(dest, record)
    assert read_record(dest) == record
    assert not record_path(dest).with_name(record_path(dest).name + ".tmp").exists()

    dest.write_bytes(b"123456")
    assert read_record(dest) is None, "a file whose size changed has no usable record"
    record_path(dest).write_text("{not json")
    assert read_record(dest) is None
