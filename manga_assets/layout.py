"""Where every product lives under ``$MANGA_DATA_DIR`` (see DESIGN.md, "Contracts").

`DataLayout` is the one place that knows the mirror and products folders and the cube paths;
assets name their files by ``PRODUCT_PATH`` metadata relative to ``products/``, which
:meth:`DataLayout.product` resolves. No metadata is ever parsed back out of a file name. Not every
path goes through here yet: the runner (``defs/runner.py``: the catalogue, manifests and features
it reads between stages) and the CLI's summary still join ``products/`` paths by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from manga_assets.sas.paths import PlateIFU


@dataclass(frozen=True)
class DataLayout:
    """Paths of the local SAS mirror and of the products under one data directory."""

    data_dir: Path

    @property
    def mirror(self) -> Path:
        """Root of the local SAS mirror; ``mirror / 'dr17/manga/...'`` as on the server."""
        return self.data_dir / "sas"

    @property
    def products(self) -> Path:
        return self.data_dir / "products"

    def product(self, relative: str) -> Path:
        """A product file given its path relative to ``products/`` (e.g. 'catalog.parquet')."""
        path = (self.products / relative).resolve()
        if not path.is_relative_to(self.products.resolve()):
            raise ValueError(f"product path {relative!r} leaves the products directory")
        return path

    def cube(self, plateifu: PlateIFU) -> Path:
        """``cubes/{plate}/{plateifu}.npz``."""
        return self.products / "cubes" / str(plateifu.plate) / f"{plateifu}.npz"

    def cube_dir(self, plate: int | str) -> Path:
        return self.products / "cubes" / str(int(plate))

    def model_dir(self, variant: str) -> Path:
        """``models/{ae,vae}/``."""
        return self.products / "models" / variant

    @property
    def reports(self) -> Path:
        return self.products / "reports"
