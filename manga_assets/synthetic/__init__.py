"""Synthetic MaNGA releases in the real SAS layout and DAP file format, for tests and the demo."""
