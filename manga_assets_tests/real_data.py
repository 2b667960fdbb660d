"""Where the tests find the real DAP MAPS file, and the marker that skips them without it.

The file is data, not code: it lives in ``shared/data/real/`` beside the checkout (CI puts
``shared/`` there too) and is never copied into the repository. See its README there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# manga_assets_tests/ -> repository root -> its parent, which holds shared/.
REAL_DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"
REAL_MAPS = REAL_DATA_DIR / "manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"
REAL_PLATEIFU = "7815-3702"

requires_real_maps = pytest.mark.skipif(
    not REAL_MAPS.is_file(),
    reason=f"the real DAP MAPS file is absent: expected {REAL_MAPS.resolve()} "
    "(shared/data/real/ beside the checkout; see its README)",
)
