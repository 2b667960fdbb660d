"""The chi-square no model can beat on survey-like data, against the mean-map baseline, per bundle.

    python benchmarks/noise_floor.py [--galaxies 200]

Writes two noise realisations of the same synthetic galaxies (DR17 bundle mix, correlated spaxel
noise, lean files), extracts both as the pipeline does, and measures per bundle size, over pixels
valid in both that average the same spaxels (`manga_assets.cubes.realisations`):

- the noise floor: the chi-square per pixel of the difference of the two realisations, in noise
  units (1 when the cubes' IVAR is right): what a perfect model scores, by construction;
- the mean-map baseline: the chi-square per pixel of each line's mean normalised map (from the
  first realisations) against the second realisations, with the models' 5 % systematic floor:
  what the quality gate's FEV compares a model with.

The gate's FEV = (baseline - model) / (baseline - 1) then runs from 0 (the mean map) to 1 (the
noise) whatever the galaxies' depth; with the former mean squared error of stretched maps, the
noise alone held the best reachable ratio to 0.88 of the baseline at survey scale.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from manga_assets.cubes.cube_file import read_cube
from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy
from manga_assets.cubes.realisations import (
    compared_pixels,
    difference_chi_square,
    same_spaxel_cells,
)
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.autoencoder import DEFAULT_SYSTEMATIC_FLOOR
from manga_assets.model.normalise import Normalisation, galaxy_scale
from manga_assets.synthetic.population import plan_release
from manga_assets.synthetic.release import rewrite_galaxy
from manga_assets.synthetic.spec import DR17_SURVEY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--galaxies", type=int, default=200)
    args = parser.parse_args()

    plates = max(1, args.galaxies // 15)
    spec = replace(DR17_SURVEY, n_plates=plates, n_cubes=plates * 17, n_repeats=0, faults=False)
    galaxies = [
        g for g in plan_release(spec)
        if g.catalogue_case == "none" and g.dap_done and g.anomaly_kind == "none"
    ][: args.galaxies]  # fmt: skip
    settings = ExtractionSettings()
    normalisation = Normalisation()
    rows = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        for galaxy in galaxies:
            maps, cubes = [], []
            for offset in (1, 2):
                root = scratch / f"realisation{offset}"
                maps.append(rewrite_galaxy(root, spec, galaxy.plateifu, offset))
                cube_path = scratch / f"cube{offset}.npz"
                extract_galaxy(maps[-1], cube_path, settings)
                cubes.append(read_cube(cube_path))
            same = same_spaxel_cells(maps[0], maps[1], settings)
            valid = compared_pixels(cubes[0], cubes[1], same)
            if not valid.any():
                continue
            scale = galaxy_scale(cubes[0].flux, valid, PROJECT_LINES, normalisation)
            rows.append((galaxy.ifu_size, difference_chi_square(*cubes, same, scale),
                         cubes[0].flux / scale, cubes[1].flux / scale,
                         cubes[1].ivar * scale**2, valid))  # fmt: skip

    first = np.stack([r[2] for r in rows])
    valid = np.stack([r[5] for r in rows])
    mean_map = (first * valid).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    print(f"{len(rows)} normal galaxies, two realisations each "
          f"(systematic floor {DEFAULT_SYSTEMATIC_FLOOR:.0%} in the baseline)")  # fmt: skip
    print("| bundle | galaxies | noise floor (chi2/pixel, median) | mean-map chi2/pixel (median) |")
    print("|---|---|---|---|")
    sizes = sorted({r[0] for r in rows})
    for size in [*sizes, "all"]:
        chosen = [r for r in rows if size == "all" or r[0] == size]
        floors = [r[1] for r in chosen]
        baselines = []
        for _, _, _, second, weight, mask in chosen:
            floor = (DEFAULT_SYSTEMATIC_FLOOR * mean_map[mask]) ** 2
            effective = weight[mask] / (1 + weight[mask] * floor)
            baselines.append(float(np.mean(effective * (second[mask] - mean_map[mask]) ** 2)))
        print(f"| {size} | {len(chosen)} | {np.median(floors):.3f} | {np.median(baselines):.2f} |")


if __name__ == "__main__":
    main()
