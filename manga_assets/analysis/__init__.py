"""Whole-sample analyses: UMAP, anomaly scores, latent neighbours, BPT/AGN classification, report."""
