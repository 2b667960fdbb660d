"""Checks on a downloaded file's content, made while it streams past, in bounded memory.

A :class:`ContentCheck` computes the SHA-256 of the bytes and, from the file name, checks the
format: a ``.gz`` file must be a complete gzip stream whose CRC-32 and length trailers match (the
only way to catch a truncated ``.fits.gz``), and ``.fits`` / ``.fits.gz`` content must begin with
the FITS primary header card ``SIMPLE  =``.
"""

from __future__ import annotations

import hashlib
import zlib

FITS_MAGIC = b"SIMPLE  ="
# Input is fed to zlib in slices and output is capped per call: FITS images full of zeros deflate
# by factors of 1000, and neither the input copy zlib keeps nor the output may grow with that.
_INFLATE_SLICE = 64 * 1024
_INFLATE_MAX_OUT = 4 * 1024 * 1024
_HEAD_BYTES = len(FITS_MAGIC)


class ContentCheck:
    """Streaming SHA-256 and format check of one file.

    Parameters
    ----------
    name : str
        File name; ``.gz`` turns on the gzip check, ``.fits`` or ``.fits.gz`` the FITS check
        (case-insensitive).

    Examples
    --------
    >>> check = ContentCheck("x.fits.gz")
    >>> for chunk in chunks:  # doctest: +SKIP
    ...     check.update(chunk)
    >>> check.problem()  # doctest: +SKIP
    'gzip stream ends early: the file is truncated'
    """

    def __init__(self, name: str) -> None:
        lower = name.lower()
        self._hash = hashlib.sha256()
        self._size = 0
        self._is_gzip = lower.endswith(".gz")
        self._is_fits = lower.endswith((".fits", ".fits.gz"))
        self._head = b""
        self._error: str | None = None
        self._inflater = zlib.decompressobj(wbits=31) if self._is_gzip else None
        self._members = 0  # complete gzip members seen
        self._in_member = False  # a member has started and not yet ended
        self._in_padding = False  # zero bytes after the last member, which gzip tolerates

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes seen so far."""
        return self._hash.hexdigest()

    @property
    def size(self) -> int:
        """Number of bytes seen so far."""
        return self._size

    def update(self, chunk: bytes) -> None:
        """Feed the next ``chunk`` of the file."""
        self._hash.update(chunk)
        self._size += len(chunk)
        if self._error is not None:
            return
        if self._inflater is None:
            self._keep_head(chunk)
            return
        view = memoryview(chunk)
        for offset in range(0, len(view), _INFLATE_SLICE):
            self._inflate(bytes(view[offset : offset + _INFLATE_SLICE]))
            if self._error is not None:
                return

    def problem(self) -> str | None:
        """What is wrong with the content seen, or None when it passed every check.

        Call it once all bytes were fed: an incomplete gzip stream is only known at the end.
        """
        if self._error is not None:
            return self._error
        if self._size == 0:
            return "the file is empty"
        if self._is_gzip and (self._in_member or self._members == 0):
            return "gzip stream ends early: the file is truncated"
        if self._is_fits and self._head != FITS_MAGIC:
            what = "decompressed content" if self._is_gzip else "content"
            return f"{what} does not start with a FITS header ('SIMPLE  =')"
        return None

    def _keep_head(self, data: bytes) -> None:
        if len(self._head) < _HEAD_BYTES:
            self._head += data[: _HEAD_BYTES - len(self._head)]

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        while data:
            if self._in_padding or (self._members and not self._in_member and data[0] == 0):
                # After a complete member, only NUL padding may follow (as gzip.open accepts).
                self._in_padding = True
                if data.count(0) != len(data):
                    self._error = "unexpected bytes after the end of the gzip stream"
                return
            self._in_member = True
            try:
                self._keep_head(self._inflater.decompress(data, _INFLATE_MAX_OUT))
                while self._inflater.unconsumed_tail and not self._inflater.eof:
                    tail = self._inflater.unconsumed_tail
                    self._keep_head(self._inflater.decompress(tail, _INFLATE_MAX_OUT))
            except zlib.error as exc:
                self._error = f"not a valid gzip stream ({exc})"
                return
            if not self._inflater.eof:
                return
            # One member ended (its CRC-32 and length were checked by zlib); gzip allows several.
            self._members += 1
            self._in_member = False
            data = self._inflater.unused_data
            self._inflater = zlib.decompressobj(wbits=31)
