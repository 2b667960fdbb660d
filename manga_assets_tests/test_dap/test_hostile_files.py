"""Files built to hang, exhaust or confuse the MAPS reader: each is refused with a MapsFileError.

One test per finding of the review (issue 23, part 1). Each builds its file from a small MAPS
file written by the test builders, and runs the reader under a time and memory budget, so a
regression shows up as a failure rather than as a hung or swapping test session.
"""

from __future__ import annotations

import gzip
import re
import signal
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from manga_assets.dap.datamodel import FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION
from manga_assets.dap.errors import MapsFileError
from manga_assets.dap.fitsstream import DEFAULT_LIMITS, FitsLimits, read_hdus
from manga_assets.dap.maps import (
    channel_indices,
    check_maps_file,
    maps_file_problem,
    read_maps,
    read_versdap,
)
from manga_assets.synthetic.hostile import (
    BLOCK,
    gzip_bomb,
    gzip_members,
    hdu_spans,
    header_bomb,
    huge_naxis,
    no_end_card,
    set_card,
)
from manga_assets_tests.fits_builders import write_maps

MIB = 1 << 20
READ = (FLUX_EXTENSION, IVAR_EXTENSION, MASK_EXTENSION)


@contextmanager
def budget(seconds: int = 2, megabytes: int = 64) -> Iterator[None]:
    """Fail the test if the block runs longer than ``seconds`` or allocates over ``megabytes``.

    SIGALRM interrupts a pure-Python loop (the old reader's hang was one), so a hang becomes a
    TimeoutError here instead of a test session that never ends.
    """

    def expire(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
        assert peak < megabytes * MIB, f"peak {peak / MIB:.0f} MiB, over {megabytes} MiB"
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def good_fits(tmp_path_factory) -> bytes:
    """The uncompressed bytes of a small, valid DR17-layout MAPS file."""
    path = write_maps(tmp_path_factory.mktemp("good") / "good.fits", compress=False)
    return path.read_bytes()


def hdu_start(fits_bytes: bytes, extname: str) -> int:
    """Byte offset of the header of extension ``extname``."""
    for start, data_start, _ in hdu_spans(fits_bytes):
        header = fits.Header.fromstring(fits_bytes[start:data_start].decode("ascii"))
        if header.get("EXTNAME") == extname:
            return start
    raise KeyError(extname)


def refused(path: Path, match: str, reader: Callable = read_maps) -> str:
    """The reader's MapsFileError message for ``path``, checked to name the file and ``match``."""
    with budget(), pytest.raises(MapsFileError, match=match) as caught:
        reader(path)
    assert str(path) in str(caught.value)
    return str(caught.value)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- hang --------------------------------------------------------------------------------------


def test_a_primary_header_declaring_10_to_the_12_axes_is_refused_at_once(good_fits, tmp_path):
    path = write(tmp_path, "naxis.fits.gz", huge_naxis(good_fits))
    assert path.stat().st_size < 50_000
    refused(path, "NAXIS = 1000000000000, outside 0-999", reader=read_versdap_strict)
    refused(path, "NAXIS = 1000000000000", reader=check_maps_file)
    with budget():
        assert read_versdap(path) == ""


def read_versdap_strict(path: Path) -> None:
    """What read_versdap reads (the primary header alone), without its forgiving ''."""
    read_hdus(path, extnames=())


# -- memory ------------------------------------------------------------------------------------


def test_a_needed_extension_declaring_400_mb_of_zeros_is_refused_before_reading(
    good_fits, tmp_path
):
    """The 195 kB .fits.gz that reached 444 MiB: the size is refused from the header alone."""
    start = hdu_start(good_fits, FLUX_EXTENSION)
    (data_start,) = [data for header, data, _ in hdu_spans(good_fits) if header == start]
    lying = set_card(good_fits, "NAXIS3", str(400 * MIB // (12 * 12 * 4)), hdu_start=start)
    body = lying[:data_start]  # primary, fillers and the flux header; then zeros
    path = write(tmp_path, "bomb.fits.gz", gzip_members(iter([(body, 1), (bytes(MIB), 400)])))
    assert path.stat().st_size < 1_000_000
    refused(path, "declares 419,429,952 bytes of data, more than the 16,777,216")


def test_a_header_without_end_stops_after_the_header_limit(good_fits, tmp_path):
    """The no-END file that reached 357 MiB: 64 MiB of blank cards, read 100 blocks at most."""
    path = write(tmp_path, "noend.fits.gz", no_end_card(good_fits))
    refused(path, "a header runs over 100 blocks .* without an END card")
    refused(path, "without an END card", reader=check_maps_file)


def test_a_header_bomb_stops_after_the_header_limit(good_fits, tmp_path):
    path = write(tmp_path, "headerbomb.fits.gz", header_bomb(good_fits, comment_blocks=4096))
    refused(path, "a header runs over 100 blocks")


def test_a_gzip_bomb_of_honest_extensions_is_refused_by_its_inflation_ratio(good_fits, tmp_path):
    path = write(tmp_path, "gzipbomb.fits.gz", gzip_bomb(good_fits))
    assert path.stat().st_size < 3_000_000
    refused(path, r"inflated from .* compressed ones \(a ratio of")


def test_the_decompressed_limit_is_a_setting(good_fits, tmp_path, monkeypatch):
    from manga_assets.defs.resources import DataDirResource
    from manga_assets.settings import DEFAULT_MAPS_MAX_BYTES, Settings

    path = write(tmp_path, "good.fits.gz", gzip.compress(good_fits))
    tight = FitsLimits(max_decompressed_bytes=len(good_fits) // 2)
    with pytest.raises(MapsFileError, match="raise MANGA_MAPS_MAX_BYTES"):
        read_maps(path, limits=tight)
    assert DEFAULT_LIMITS.max_decompressed_bytes == DEFAULT_MAPS_MAX_BYTES >= 512 * MIB
    monkeypatch.setenv("MANGA_MAPS_MAX_BYTES", "12345")
    settings = Settings.from_env()
    assert settings.maps_max_bytes == 12345
    resource = DataDirResource(data_dir=str(tmp_path), maps_max_bytes=settings.maps_max_bytes)
    assert resource.fits_limits.max_decompressed_bytes == 12345
    monkeypatch.setenv("MANGA_MAPS_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="MANGA_MAPS_MAX_BYTES='lots' must be a positive"):
        Settings.from_env()


# -- errors that escaped the DapError handler --------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("NAXIS", "'abc'", r"NAXIS = \"'abc'\", not an integer"),
        ("BITPIX", "7", r"BITPIX = 7, not one of \[-64, -32, 8, 16, 32, 64\]"),
        ("NAXIS1", "-12", "declares a negative axis length"),
        ("BITPIX", "1_6", "1_6' breaks the FITS card syntax"),
        ("GCOUNT", "-1", "GCOUNT = -1; neither may be negative"),
    ],
)
def test_a_malformed_structural_keyword_is_a_maps_file_error(
    good_fits, tmp_path, key, value, message
):
    start = hdu_start(good_fits, FLUX_EXTENSION)
    path = write(tmp_path, "bad.fits", set_card(good_fits, key, value, hdu_start=start))
    refused(path, message)
    versdap, why = maps_file_problem(path)  # what the download check records
    assert versdap == "" and why.startswith(f"{path}: ") and re.search(message, why)


def test_a_malformed_card_value_read_lazily_by_astropy_is_a_maps_file_error(good_fits, tmp_path):
    bad = set_card(good_fits, "SCINPVEL", "'unclosed")
    path = write(tmp_path, "bad.fits", bad)
    refused(path, "SCINPVEL|cannot be read|cannot be parsed")


def test_an_image_extension_that_is_a_table_is_refused(good_fits, tmp_path):
    start = hdu_start(good_fits, FLUX_EXTENSION)
    path = write(
        tmp_path, "table.fits", set_card(good_fits, "XTENSION", "'BINTABLE'", hdu_start=start)
    )
    refused(path, "is a BINTABLE HDU, not an IMAGE")


# -- channels ----------------------------------------------------------------------------------


def _flux_header(channels: dict[str, str], n_channels: int = 3) -> fits.Header:
    header = fits.ImageHDU(np.zeros((n_channels, 2, 2), np.float32), name="EMLINE_GFLUX").header
    for key, name in channels.items():
        header[key] = name
    return header


def test_channel_c0_is_refused_rather_than_read_as_the_last_channel():
    header = _flux_header({"C0": "Ha-6564", "C02": "Hb-4862"})
    with pytest.raises(MapsFileError, match="names channel C0 = 'Ha-6564', but .* has 3"):
        channel_indices(header, path="x.fits")


def test_a_channel_beyond_the_channel_count_is_refused():
    with pytest.raises(MapsFileError, match="C1 to C3"):
        channel_indices(_flux_header({"C01": "Ha-6564", "C04": "Hb-4862"}))


def test_two_channels_of_one_name_are_refused():
    with pytest.raises(MapsFileError, match="ambiguous"):
        channel_indices(_flux_header({"C01": "Ha-6564", "C02": "Ha-6564"}))


def test_channels_in_range_map_to_their_index():
    header = _flux_header({"C01": "OII-3727", "C2": "Hb-4862", "C03": "Ha-6564"})
    assert channel_indices(header) == {"OII-3727": 0, "Hb-4862": 1, "Ha-6564": 2}


def test_c0_in_a_file_is_a_maps_file_error(good_fits, tmp_path):
    start = hdu_start(good_fits, FLUX_EXTENSION)
    path = write(tmp_path, "c0.fits", set_card(good_fits, "C01", "'OII-3727'", hdu_start=start))
    renamed = path.read_bytes().replace(b"C01     = 'OII-3727'", b"C0      = 'OII-3727'", 1)
    path.write_bytes(renamed)
    refused(path, "names channel C0")


# -- duplicate keywords ------------------------------------------------------------------------


def _duplicate(fits_bytes: bytes, extname: str, key: str, value: str) -> bytes:
    """``fits_bytes`` with a second ``key`` card, given ``value``, at the end of a header."""
    start = hdu_start(fits_bytes, extname)
    end = fits_bytes.index(b"END     ", start)
    card = f"{key:<8}= {value:>20}".ljust(80).encode("ascii")
    blank = fits_bytes.index(b" " * 80, end)  # the END card moves one card on, into the padding
    assert blank - end < BLOCK
    return fits_bytes[:end] + card + fits_bytes[end:blank] + fits_bytes[blank + 80 :]


def test_a_structural_keyword_given_twice_with_different_values_is_refused(good_fits, tmp_path):
    """astropy takes the last NAXIS1 for the data but the first for ``header['NAXIS1']``."""
    path = write(tmp_path, "dup.fits", _duplicate(good_fits, FLUX_EXTENSION, "NAXIS1", "13"))
    refused(path, "NAXIS1 appears twice in one header, as 12 and 13")


def test_a_second_simple_card_of_another_value_is_refused(good_fits, tmp_path):
    """astropy picks the primary HDU's type from the last SIMPLE and then cannot read the file."""
    path = write(tmp_path, "dup.fits", _duplicate_primary(good_fits, "SIMPLE", "F"))
    refused(path, "SIMPLE appears twice in one header, as T and F")


def _duplicate_primary(fits_bytes: bytes, key: str, value: str) -> bytes:
    end = fits_bytes.index(b"END     ")
    card = f"{key:<8}= {value:>20}".ljust(80).encode("ascii")
    blank = fits_bytes.index(b" " * 80, end)
    return fits_bytes[:end] + card + fits_bytes[end:blank] + fits_bytes[blank + 80 :]


def test_a_structural_keyword_repeated_with_its_value_reads_as_astropy_does(good_fits, tmp_path):
    path = write(tmp_path, "dup.fits", _duplicate(good_fits, FLUX_EXTENSION, "NAXIS1", "12"))
    read = read_hdus(path, extnames=READ).extensions[FLUX_EXTENSION][1]
    with fits.open(path) as hdus:
        np.testing.assert_array_equal(read, hdus[FLUX_EXTENSION].data)


def test_a_channel_keyword_given_twice_takes_the_first_value_as_astropy_does(good_fits, tmp_path):
    path = write(tmp_path, "dup.fits", _duplicate(good_fits, FLUX_EXTENSION, "C01", "'Ha-6564'"))
    header = read_hdus(path, extnames=READ).extensions[FLUX_EXTENSION][0]
    with fits.open(path) as hdus:
        first = hdus[FLUX_EXTENSION].header["C01"]
    assert first == "OII-3727"
    assert channel_indices(header)["OII-3727"] == 0
    assert "Ha-6564" in channel_indices(header)  # its own C-keyword is still there


# -- the download check rejects what the reader rejects ----------------------------------------


def test_the_download_check_rejects_each_hostile_file_and_passes_a_good_one(good_fits, tmp_path):
    good = write(tmp_path, "good.fits.gz", gzip.compress(good_fits))
    assert maps_file_problem(good) == ("3.1.0", "")
    for name, build in [
        ("naxis", huge_naxis),
        ("noend", no_end_card),
        ("gzipbomb", gzip_bomb),
        ("headerbomb", header_bomb),
    ]:
        path = write(tmp_path, f"{name}.fits.gz", build(good_fits))
        with budget():
            versdap, why = maps_file_problem(path)
        assert versdap == "" and why.startswith(str(path)), (name, why)
        with budget(), pytest.raises(MapsFileError):
            read_maps(path)
