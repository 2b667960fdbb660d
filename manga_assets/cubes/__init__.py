"""MAPS arrays to fixed-grid line-map cubes and per-galaxy features."""
