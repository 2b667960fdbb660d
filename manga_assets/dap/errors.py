"""Errors and warnings raised while reading DAP products.

Each error names the file, the extension or channel, and what to do about it. The classes also
derive from the built-in exception that matches their meaning (OSError for an unreadable file,
KeyError for something absent, ValueError for a wrong shape), as astropy.io.fits does.
"""

from __future__ import annotations

from astropy.utils.exceptions import AstropyUserWarning


class DapError(Exception):
    """Base class of every error raised by ``manga_assets.dap``."""

    def __str__(self) -> str:
        # KeyError would otherwise print the message in quotes.
        return str(self.args[0]) if self.args else ""


class MapsFileError(DapError, OSError):
    """A MAPS file cannot be read: missing, truncated, not gzip, or not FITS."""


class MissingExtensionError(DapError, KeyError):
    """A MAPS file lacks an extension the pipeline needs."""


class MissingChannelError(DapError, KeyError):
    """An extension lacks a channel (emission line) the pipeline needs."""


class MapsShapeError(DapError, ValueError):
    """Extensions of one MAPS file disagree in shape, or are not 3-D."""


class ReleaseMismatchError(DapError, ValueError):
    """A file was made by another DAP version or analysis type than the configured release."""


class CatalogueError(DapError, ValueError):
    """A DRPall or DAPall catalogue lacks columns or extensions the pipeline needs."""


class DapWarning(AstropyUserWarning):
    """Something odd but recoverable in a DAP product (e.g. NaN fluxes, treated as invalid)."""
