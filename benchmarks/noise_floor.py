"""The reconstruction loss no model can beat on synthetic data, against the mean-map baseline.

    python benchmarks/noise_floor.py [--galaxies 200]

Writes two noise realisations of the same synthetic galaxies (DR17 bundle mix, lean files),
extracts and normalises both exactly as the pipeline does (one scale per galaxy, the asinh
stretch), and measures over pixels valid in both:

- the noise floor: half the mean squared difference of the two realisations, i.e. the variance of
  a normalised pixel around its noiseless value, the masked MSE of a perfect model;
- the mean-map baseline: the masked MSE of predicting each line's mean normalised map (taken from
  the first realisations) for the second realisations, as the models' check computes it;

and prints floor / baseline: the best validation-loss ratio any model can reach on such data.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from manga_assets.cubes.extract import ExtractionSettings, extract_galaxy, read_cube
from manga_assets.dap.datamodel import PROJECT_LINES
from manga_assets.model.normalise import Normalisation, galaxy_scale, normalise, valid_pixels
from manga_assets.synthetic.population import plan_release
from manga_assets.synthetic.release import rewrite_galaxy
from manga_assets.synthetic.spec import DR17_SURVEY


def normalised_pair(spec, plateifu, scratch: Path, normalisation: Normalisation):
    """Two realisations of one galaxy, normalised with one shared scale, and their valid pixels."""
    cubes = []
    for offset in (1, 2):
        maps = rewrite_galaxy(scratch / f"release{offset}", spec, plateifu, seed_offset=offset)
        cube_path = scratch / f"cube{offset}.npz"
        extract_galaxy(maps, cube_path, ExtractionSettings())
        cubes.append(read_cube(cube_path))
    first, second = cubes
    valid = valid_pixels(first.flux, first.mask, first.ivar)
    valid &= valid_pixels(second.flux, second.mask, second.ivar)
    if not valid.any():
        return None
    scale = np.mean(
        [galaxy_scale(c.flux, valid, PROJECT_LINES, normalisation) for c in (first, second)]
    )
    return (
        normalise(first.flux, valid, scale, normalisation),
        normalise(second.flux, valid, scale, normalisation),
        valid,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--galaxies", type=int, default=200)
    args = parser.parse_args()

    plates = max(1, args.galaxies // 15)
    spec = replace(DR17_SURVEY, n_plates=plates, n_cubes=plates * 17, n_repeats=0, faults=False)
    galaxies = [g for g in plan_release(spec) if g.catalogue_case == "none"][: args.galaxies]
    normalisation = Normalisation()
    pairs = []
    with tempfile.TemporaryDirectory() as scratch:
        for galaxy in galaxies:
            pair = normalised_pair(spec, galaxy.plateifu, Path(scratch), normalisation)
            if pair is not None:
                pairs.append(pair)

    first = np.stack([a for a, _, _ in pairs])
    second = np.stack([b for _, b, _ in pairs])
    valid = np.stack([v for _, _, v in pairs])
    floor = float(((first - second)[valid] ** 2).sum() / 2 / valid.sum())
    mean_map = (first * valid).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    baseline = float(((second - mean_map)[valid] ** 2).mean())
    print(f"{len(pairs)} galaxies, {int(valid.sum()):,} valid pixels (both realisations)")
    print(f"noise floor (perfect model)   {floor:.4f}")
    print(f"mean-map baseline             {baseline:.4f}")
    print(f"best reachable ratio          {floor / baseline:.3f}")


if __name__ == "__main__":
    main()
