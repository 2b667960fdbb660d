"""A few hundred deterministic mutations of real and synthetic MAPS headers, read under a budget.

Every mutation must end in a typed error (DapError) or in values equal to astropy's, within
2 s and 64 MiB. ``benchmarks/fits_fuzz.py`` runs 10,000 and prints the counts.
"""

from __future__ import annotations

from manga_assets_tests.fits_builders import write_maps
from manga_assets_tests.fits_fuzz import MUTATORS, Seed, mutations, run_fuzz
from manga_assets_tests.real_data import REAL_MAPS

N_MUTATIONS = 200


def test_every_mutation_is_a_typed_error_or_equals_astropy(tmp_path):
    seeds = [
        Seed.from_file("synthetic DR17", write_maps(tmp_path / "dr17.fits.gz")),
        Seed.from_file(
            "synthetic DR15", write_maps(tmp_path / "dr15.fits", dapver="2.2.1", compress=False)
        ),
    ]
    # The real DAP file's headers too when shared/ is beside the checkout (as in CI).
    seeds += [Seed.from_file("real", REAL_MAPS)] if REAL_MAPS.is_file() else []
    bad = []
    counts = run_fuzz(seeds, N_MUTATIONS, tmp_path, seed=23, on_bad=lambda m, v: bad.append((m, v)))
    shown = "\n".join(f"{m.description}: {v.outcome}, {v.peak_bytes >> 20} MiB, {v.detail}"
                      for m, v in bad[:10])  # fmt: skip
    assert not bad, f"{len(bad)} mutations misread:\n{shown}"
    assert counts["hang"] == counts["untyped"] == counts["unequal"] == counts["over_memory"] == 0
    assert counts["typed"] + counts["equal"] == N_MUTATIONS
    # Every kind of damage was tried, and both outcomes happen: the harness is not vacuous.
    for name in MUTATORS:
        assert counts[f"{name}:typed"] + counts[f"{name}:equal"] > 0, name
    assert counts["typed"] > 50 and counts["equal"] > 20


def test_mutations_are_deterministic(tmp_path):
    seeds = [Seed.from_file("synthetic", write_maps(tmp_path / "s.fits.gz"))]
    first = [m.data for _, m in mutations(seeds, 30, seed=5)]
    again = [m.data for _, m in mutations(seeds, 30, seed=5)]
    assert first == again
