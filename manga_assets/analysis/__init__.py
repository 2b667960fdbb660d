"""Whole-sample analyses: UMAP, anomaly scores, latent neighbours, BPT/AGN classes, report."""
