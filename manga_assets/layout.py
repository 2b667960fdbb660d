"""Where every product lives under ``$MANGA_DATA_DIR`` (see DESIGN.md, "Contracts").

`DataLayout` is the one place that knows the mirror and products folders and the cube paths;
:func:`product_path` says where each asset's product lives relative to ``products/`` (assets carry
it as ``PRODUCT_PATH`` metadata, :meth:`DataLayout.product` resolves it, and
:mod:`manga_assets.staleness` reads the products there). No metadata is ever parsed back out of a
file name. Not every path goes through here yet: the CLI's summary still joins ``products/`` paths
by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from manga_assets.sas.paths import PlateIFU

# The training set's directory under products/ (a published link to its current version).
TRAINING_SET_DIR = "training_set"
# The AGN report's provenance, a JSON sidecar beside the HTML report under products/.
REPORT_PROVENANCE = "reports/agn_report.provenance.json"
# Products of assets that are not per model; per-model ones are named in product_path.
_SAMPLE_PRODUCTS = {
    "catalog": "catalog.parquet",
    "maps_files": "manifest/{partition}.parquet",
    "line_cubes": "features/{partition}.parquet",
    "agn_sample": "agn_sample.parquet",
}


def product_path(asset: str) -> str:
    """Where the Parquet product of ``asset`` ('catalog', 'ae/umap', ...) lives under products/.

    Per-plate products are templates with a ``{partition}`` field (the plate). A model's
    analyses are ``{variant}/{name}.parquet``; its per-plate latents live in ``{variant}/latents/``
    and the latents table that gathers them is ``{variant}/latents.parquet``.
    """
    if asset in _SAMPLE_PRODUCTS:
        return _SAMPLE_PRODUCTS[asset]
    variant, _, name = asset.partition("/")
    if not name or "/" in name:
        raise ValueError(
            f"no product path for asset {asset!r}: expected one of {sorted(_SAMPLE_PRODUCTS)} "
            f"or '<model>/<analysis>' such as 'ae/umap'"
        )
    if name == "latents":
        return f"{variant}/latents/{{partition}}.parquet"
    if name == "latent_table":
        return f"{variant}/latents.parquet"
    return f"{variant}/{name}.parquet"


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
