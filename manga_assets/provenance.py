"""What each model-side product was made from, recorded inside the product.

Staleness is decided from the files alone, never from what one invocation remembers, so a run
killed at any instant is repaired by the next (DESIGN.md, "Habits"):

- a cube is made from a MAPS file and extraction settings: its *cube digest* joins the features
  row's ``maps_sha256`` and ``settings_key``;
- a latents row carries the ``model_id`` that embedded it and its ``cube_digest``; a plate's
  latents file also records, in its Parquet key-value metadata, the code version, the model id
  and the digest of all its cube digests (a cheap footer read decides whether it is current);
- a whole-sample analysis records the model id and the *latents digest* (of every row's
  plate-IFU, model id and cube digest) of the latents table it read;
- the AGN sample records the digest of the cubes it classified, and the report the provenance
  of every product it read;
- the training set records, in its ``meta.json``, the digest of the cubes it holds and its split
  settings;
- an analysis also records the settings it was made with (neighbours, UMAP, anomaly settings):
  other settings make it stale like other inputs do.

Plain Python over pandas and pyarrow; ``defs/`` writes these records and
:mod:`manga_assets.staleness` compares them with what the products would record now.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

# The Parquet key-value metadata key under which a product's provenance (JSON) is stored.
PROVENANCE_KEY = b"manga_assets.provenance"

# Code versions recorded in the products they name (and the assets' Dagster code versions): bump
# one when the code that makes the product changes what it writes, and the product is stale.
TRAINING_SET_CODE_VERSION = "2"
# 3: latents rows carry model_id and cube_digest, files record their provenance.
# 4: and the integrated H-alpha S/N, for the line_absence anomaly component.
# 5: and per line the residual summed over the footprint, for extended_residual.
# 6: the coherent peaks count the model's systematic floor once over the smoothing kernel.
# 7: residuals counted against the model's own per-line uncertainty.
LATENTS_CODE_VERSION = "7"


def digest(*parts: object) -> str:
    """A short hex digest of ``parts`` joined by '|' (16 hex digits, as the data versions)."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def embeddable(features: pd.DataFrame) -> pd.DataFrame:
    """The features rows whose galaxies have a cube with at least one valid pixel to embed."""
    return features[(features["status"] == "ok") & (features["n_valid_pixels"] > 0)]


def cube_digests(features: pd.DataFrame) -> list[str]:
    """Per features row, the digest of what its cube was made from (MAPS sha256, settings)."""
    return [
        digest(sha, key)
        for sha, key in zip(
            features["maps_sha256"].tolist(), features["settings_key"].tolist(), strict=True
        )
    ]


def set_digest(plateifus: list[str], cubes: list[str]) -> str:
    """Digest of the pairs (plate-IFU, cube digest), whatever their order."""
    return digest(*sorted(f"{p}:{c}" for p, c in zip(plateifus, cubes, strict=True)))


def plate_cube_digests(features: pd.DataFrame) -> dict[str, str]:
    """Per plate, the digest of its embeddable galaxies' cube digests, from all features at once.

    ``features`` holds the rows of many plates (one concatenation: per-plate pandas calls cost
    about a second at survey scale). A plate without an embeddable galaxy is absent.
    """
    rows = embeddable(features)
    plateifus = rows["plateifu"].tolist()
    by_plate: dict[str, tuple[list[str], list[str]]] = {}
    for plateifu, cube in zip(plateifus, cube_digests(rows), strict=True):
        names, cubes = by_plate.setdefault(plateifu.split("-")[0], ([], []))
        names.append(plateifu)
        cubes.append(cube)
    return {plate: set_digest(*pairs) for plate, pairs in by_plate.items()}


def latents_file_provenance(code_version: str, model_id: str, cubes: str) -> dict:
    """What a plate's latents file records: latents code, model and its cubes' digest."""
    return {"code_version": code_version, "model_id": model_id, "cubes": cubes}


def latents_digest(table: pd.DataFrame) -> str:
    """Digest of a latents table's rows: plate-IFU, model id and cube digest of each.

    Rows written before latents carried their provenance count with empty ids.
    """
    unknown = [""] * len(table)
    rows = sorted(
        zip(
            table["plateifu"].astype(str).tolist(),
            table["model_id"].astype(str).tolist() if "model_id" in table else unknown,
            table["cube_digest"].astype(str).tolist() if "cube_digest" in table else unknown,
            strict=True,
        )
    )
    return digest(*(":".join(row) for row in rows))


def latents_provenance(table: pd.DataFrame) -> dict:
    """What an analysis of ``table`` (a latents table) was computed from.

    ``model_id`` lists every model id among the rows; more than one never equals the current
    model's id, so an analysis of mixed latents is always stale.
    """
    model_ids = sorted({str(m) for m in table["model_id"].tolist()}) if "model_id" in table else []
    return {"model_id": ",".join(model_ids), "latents": latents_digest(table)}


def expected_latents_provenance(features: pd.DataFrame, model_id: str) -> dict:
    """The provenance of the latents table that ``model_id`` makes from ``features`` now."""
    rows = embeddable(features)
    table = pd.DataFrame(
        {
            "plateifu": rows["plateifu"].tolist(),
            "model_id": model_id,
            "cube_digest": cube_digests(rows),
        }
    )
    return {"model_id": model_id if len(table) else "", "latents": latents_digest(table)}


def cubes_provenance(features: pd.DataFrame) -> dict:
    """What a product made from every usable cube (the AGN sample) was computed from."""
    ok = features[features["status"] == "ok"]
    return {"cubes": set_digest(ok["plateifu"].tolist(), cube_digests(ok))}


def with_config(provenance: dict, config: dict) -> dict:
    """``provenance`` plus the settings a product was made with (JSON-safe, e.g. a config dump)."""
    return {**provenance, "config": config}


def training_set_provenance(features: pd.DataFrame, code_version: str, config: dict) -> dict:
    """What a training set built now from every usable cube of ``features`` records."""
    return with_config({"code_version": code_version, **cubes_provenance(features)}, config)


def read_provenance(path: Path) -> dict | None:
    """The provenance recorded in a Parquet product's footer; None if absent or unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    raw = metadata.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None


def read_sidecar(path: Path) -> dict | None:
    """The provenance in a JSON sidecar (products that are not Parquet); None if absent."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
