"""Synthetic MaNGA releases in the real SAS layout and DAP file format, for tests and the demo.

``build_release(root, SyntheticReleaseSpec(...))`` writes DRPall, DAPall and one MAPS file per
analysed cube under ``root`` exactly where the SAS keeps them, plus ``root/truth.parquet`` with
what was planted (BPT class, anomalies, faults, catalogue edge cases, central line ratios, the
world and any oddity). ``SyntheticReleaseSpec(world="realistic")`` (the default) draws clumpy
star-forming disks with diffuse ionised gas, a bright tail and rare odd galaxies, calibrated
against a real DAP file by ``benchmarks/realism.py``; ``world="smooth"`` the earlier smooth disks.
"""

from manga_assets.synthetic.release import build_release, rewrite_galaxy
from manga_assets.synthetic.spec import ReleaseSummary, SyntheticReleaseSpec

__all__ = ["ReleaseSummary", "SyntheticReleaseSpec", "build_release", "rewrite_galaxy"]
