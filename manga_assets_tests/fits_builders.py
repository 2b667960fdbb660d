"""Tiny DAP files built in memory for reader tests (the synthetic release writes full-size ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from manga_assets.dap.datamodel import (
    EMLINE_CHANNELS,
    FLUX_EXTENSION,
    IVAR_EXTENSION,
    MAPS_EXTENSIONS,
    MASK_EXTENSION,
    channel_keyword,
)

DAPVER_DAPTYPE = {"3.1.0": "HYB10-MILESHC-MASTARSSP", "2.2.1": "HYB10-GAU-MILESHC"}


def line_values(dapver: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """A distinct, recognisable map per channel: channel k holds (k + 1) * a radial profile."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    profile = np.exp(-np.hypot(y - (ny - 1) / 2, x - (nx - 1) / 2) / 4).astype(np.float32)
    return {name: (k + 1) * profile for k, name in enumerate(EMLINE_CHANNELS[dapver])}


def _extension(name: str, data: np.ndarray, channels: tuple[str, ...] | None) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data=data, name=name)
    for index, channel in enumerate(channels or ()):
        hdu.header[channel_keyword(index, len(channels))] = channel
    return hdu


def write_maps(
    path: Path,
    *,
    dapver: str = "3.1.0",
    shape: tuple[int, int] = (12, 12),
    values: dict[str, np.ndarray] | None = None,
    ivar: float = 4.0,
    mask: np.ndarray | None = None,
    drop_extension: str | None = None,
    drop_channel: str | None = None,
    filler_before: int = 2,
    compress: bool = True,
    versdap: str | None = None,
) -> Path:
    """Write a minimal MAPS file: primary header, filler extensions, then the three GFLUX ones.

    ``versdap`` overrides the primary header's VERSDAP (default ``dapver``, whose layout is
    written).
    """
    channels = EMLINE_CHANNELS[dapver]
    if drop_channel:
        channels = tuple(c for c in channels if c != drop_channel)
    values = values or line_values(dapver, shape)
    flux = np.stack([values[name] for name in channels]).astype(np.float32)
    ivar_data = np.full_like(flux, ivar)
    mask_data = np.zeros(flux.shape, np.int32) if mask is None else mask.astype(np.int32)

    primary = fits.PrimaryHDU()
    primary.header["PLATEIFU"] = "8485-1901"
    primary.header["MANGAID"] = "1-209232"
    primary.header["SCINPVEL"] = 0.0407 * 299792.458
    primary.header["DAPTYPE"] = DAPVER_DAPTYPE[dapver]
    primary.header["VERSDAP"] = dapver if versdap is None else versdap
    primary.header["OBJRA"], primary.header["OBJDEC"], primary.header["EBVGAL"] = 232.5, 48.7, 0.02
    hdus = [primary]
    # Fillers carry the names of the layout's first extensions, so the file passes a layout check.
    hdus += [
        _extension(name, np.random.default_rng(i).random((3, *shape), np.float32), None)
        for i, name in enumerate(MAPS_EXTENSIONS[dapver][:filler_before])
    ]
    for name, data in (
        (FLUX_EXTENSION, flux),
        (IVAR_EXTENSION, ivar_data),
        (MASK_EXTENSION, mask_data),
    ):
        if name != drop_extension:
            hdus.append(_extension(name, data, channels))
    hdus.append(_extension("EMLINE_GEW", flux, channels))
    raw = path.with_suffix("") if compress else path
    fits.HDUList(hdus).writeto(raw, overwrite=True)
    if compress:
        import gzip
        import shutil

        with open(raw, "rb") as source, gzip.open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        raw.unlink()
    return path
