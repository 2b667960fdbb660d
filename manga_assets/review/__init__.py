"""The human loop: labels that last, calibrated lists and a ranking that learns from labels.

- `labels`: reviewers' labels in a SQLite file in the data directory (`labels_path`).
- `fdr`: p-values from the calibrated anomaly scores, Benjamini-Hochberg q-values, and the
  list that passes a chosen false-discovery rate.
- `queue`: the review queue, the anomaly ranking reordered by what a reviewer's labels say
  about galaxies like each one.

A core package: it imports no dagster, and nothing heavy at import.
"""
