"""The Dagster code location (``dagster dev``, ``dagster definitions validate``)."""

from manga_assets.defs.definitions import build_definitions

defs = build_definitions()
