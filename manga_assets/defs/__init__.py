"""The Dagster layer: assets, checks, resources, IO managers, sensors and jobs.

Only this package (with ``definitions.py`` and ``cli.py``) imports dagster. Heavy libraries
(torch, umap) are imported inside asset bodies: every run step imports this code location.
"""
