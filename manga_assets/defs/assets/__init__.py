"""Asset modules, one per group of the asset graph."""
