"""Plates partition the per-galaxy assets: the unit in which MaNGA data arrive."""

import dagster as dg

from manga_assets.defs.constants import PLATES_PARTITION

plate_partitions = dg.DynamicPartitionsDefinition(name=PLATES_PARTITION)
