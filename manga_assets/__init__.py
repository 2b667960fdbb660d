"""manga_assets: SDSS MaNGA DAP emission-line maps to learned spatio-spectral representations."""

__version__ = "0.1.0"
