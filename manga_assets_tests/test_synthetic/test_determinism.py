"""Same spec, same bytes; more plates leave the old plates' files alone; rewrites change one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from astropy.io import fits

from manga_assets.synthetic import SyntheticReleaseSpec, build_release, rewrite_galaxy
from manga_assets_tests.test_synthetic.conftest import healthy_plateifus

# Two plates hold all seven planted cases, so a third plate adds only ordinary galaxies.
TINY = SyntheticReleaseSpec(
    n_plates=2, galaxies_per_plate=6, ifu_mix=((19, 2), (37, 5)), lean=True, faults=True, seed=11
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_spec_gives_byte_identical_files(tmp_path):
    build_release(tmp_path / "a", TINY)
    build_release(tmp_path / "b", TINY)
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert first.keys() == second.keys()
    assert len([name for name in first if name.endswith(".fits.gz")]) >= 6
    for name in first:
        assert first[name] == second[name], name


def test_full_files_are_reproducible_too(tmp_path):
    spec = dataclasses.replace(TINY, lean=False, n_plates=1, galaxies_per_plate=2, faults=False)
    a = build_release(tmp_path / "a", spec)
    b = build_release(tmp_path / "b", spec)
    for plateifu in healthy_plateifus(a):
        assert a.maps_paths[plateifu].read_bytes() == b.maps_paths[plateifu].read_bytes()


def test_gzip_header_carries_no_timestamp(tmp_path):
    summary = build_release(tmp_path, TINY)
    for plateifu in healthy_plateifus(summary):
        head = summary.maps_paths[plateifu].read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"


def test_adding_a_plate_leaves_existing_maps_files_unchanged(tmp_path):
    small = build_release(tmp_path / "small", TINY)
    grown = build_release(tmp_path / "grown", dataclasses.replace(TINY, n_plates=3))
    assert grown.plateifus[: len(small.plateifus)] == small.plateifus
    assert len(grown.plateifus) > len(small.plateifus)
    assert len(small.faults) == 4 and len(small.catalogue_cases) == 4
    assert grown.faults == small.faults and grown.catalogue_cases == small.catalogue_cases
    before, after = _tree(tmp_path / "small"), _tree(tmp_path / "grown")
    maps = [name for name in before if name.endswith(".fits.gz")]
    assert maps
    for name in maps:
        assert before[name] == after[name], name
    # Only the catalogues and the truth table change.
    changed = sorted(name for name in before if before[name] != after[name])
    assert len(changed) == 3
    assert any("drpall" in n for n in changed) and any("dapall" in n for n in changed)
    assert "truth.parquet" in changed


def test_rewrite_galaxy_changes_one_file(tmp_path):
    summary = build_release(tmp_path, TINY)
    plateifu = healthy_plateifus(summary)[0]
    before = _tree(tmp_path)
    path = rewrite_galaxy(tmp_path, TINY, plateifu)
    assert path == summary.maps_paths[plateifu]
    after = _tree(tmp_path)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [str(path.relative_to(tmp_path))]
    with fits.open(path) as new, fits.open(tmp_path / changed[0]) as same_path:
        assert [h.name for h in new] == [h.name for h in same_path]
        assert new[0].header["PLATEIFU"] == plateifu
    # Offset 0 reproduces the original bytes; another offset gives yet other bytes.
    rewrite_galaxy(tmp_path, TINY, plateifu, seed_offset=0)
    assert path.read_bytes() == before[changed[0]]
    rewrite_galaxy(tmp_path, TINY, plateifu, seed_offset=2)
    assert path.read_bytes() not in (before[changed[0]], after[changed[0]])


def test_rewrite_galaxy_refuses_unknown_or_unanalysed_cubes(tmp_path):
    summary = build_release(tmp_path, TINY)
    not_done = dict((kind, p) for p, kind in summary.catalogue_cases)["dap_not_done"]
    with pytest.raises(ValueError, match="DAPDONE false"):
        rewrite_galaxy(tmp_path, TINY, not_done)
    with pytest.raises(ValueError, match="is not a cube"):
        rewrite_galaxy(tmp_path, TINY, "10099-1901")
    with pytest.raises(ValueError, match="not a MaNGA plate-IFU"):
        rewrite_galaxy(tmp_path, TINY, "../../etc")


def test_progress_reports_every_galaxy(tmp_path):
    calls: list[tuple[int, int]] = []
    summary = build_release(
        tmp_path, TINY, progress=lambda done, total: calls.append((done, total))
    )
    total = summary.n_galaxies
    assert calls == [(done, total) for done in range(1, total + 1)]


def test_rebuilding_with_a_plate_more_leaves_old_files_untouched(tmp_path):
    """Same bytes and same mtime, so a mirror's ETag does not change (no re-download)."""
    from manga_assets.synthetic.release import SyntheticReleaseSpec, build_release

    first = build_release(
        tmp_path, SyntheticReleaseSpec(n_plates=1, galaxies_per_plate=3, lean=True)
    )
    stamps = {p: path.stat().st_mtime_ns for p, path in first.maps_paths.items() if path.exists()}
    build_release(tmp_path, SyntheticReleaseSpec(n_plates=2, galaxies_per_plate=3, lean=True))
    assert stamps and all(first.maps_paths[p].stat().st_mtime_ns == t for p, t in stamps.items())
