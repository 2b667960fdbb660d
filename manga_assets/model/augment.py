"""The eight symmetries of a sky image (the dihedral group D4) as data augmentation.

A galaxy's position angle on the sky, and whether we see it from "above" or "below", carry no
physics, so rotating a cube by multiples of 90 degrees or mirroring it gives an equally plausible
galaxy. Exact pixel permutations (no interpolation) keep the valid mask exact.

Element k in 0..7 is ``rot90`` by k mod 4 quarter turns, followed by a left-right flip when k >= 4.
Transforms act on the last two axes (H, W) of (..., H, W) tensors.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

GROUP_ORDER = 8


def dihedral(x: Tensor, element: int) -> Tensor:
    """Apply one of the 8 symmetries to the last two axes.

    Parameters
    ----------
    x : Tensor, (..., H, W), H == W
    element : int in 0..7

    Returns
    -------
    Tensor, same shape, contiguous
    """
    if not 0 <= element < GROUP_ORDER:
        raise ValueError(f"dihedral group element must be in 0..7, got {element}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral symmetries need square maps, got {tuple(x.shape[-2:])}")
    out = torch.rot90(x, element % 4, dims=(-2, -1))
    if element >= 4:
        out = torch.flip(out, dims=(-1,))
    return out.contiguous()


def compose(first: int, second: int) -> int:
    """The element equal to applying ``first`` then ``second``."""
    # Work on a 2x2 pattern with four distinct values: D4 acts faithfully on it.
    probe = torch.arange(4.0).view(2, 2)
    target = dihedral(dihedral(probe, first), second)
    for element in range(GROUP_ORDER):
        if torch.equal(dihedral(probe, element), target):
            return element
    raise AssertionError("the dihedral group is closed")  # pragma: no cover


def inverse(element: int) -> int:
    """The element that undoes ``element``."""
    return next(k for k in range(GROUP_ORDER) if compose(element, k) == 0)


def random_dihedral(
    x: Tensor, valid: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, int]:
    """Apply one random symmetry, the same to the maps and to their valid mask.

    Parameters
    ----------
    x : Tensor, (B, T, H, W)
    valid : Tensor of bool, (B, T, H, W)
    generator : torch.Generator, optional
        Source of the random choice (seeded by the caller for reproducible training).

    Returns
    -------
    x, valid : Tensor, transformed
    element : int
        The symmetry applied.
    """
    if x.shape != valid.shape:
        raise ValueError(
            f"maps and valid mask must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(valid.shape)}"
        )
    element = int(torch.randint(GROUP_ORDER, (1,), generator=generator).item())
    return dihedral(x, element), dihedral(valid, element), element


# How `hide_pixels` hides: a share of the galaxies lose random cells, some lose a whole line.
HIDDEN_CELL_PROBABILITY = 0.5
HIDDEN_CELL_FRACTION = 0.1
HIDDEN_LINE_PROBABILITY = 0.25


def hide_pixels(valid: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The pixels the encoder may see: ``valid`` less some hidden at random.

    Real cubes lose pixels (failed fits, masked regions) and sometimes a whole line. The encoder
    is shown such gaps during training while the loss still counts every valid pixel, so the
    model learns to fill them from the other pixels and lines, and a gap alone does not move a
    galaxy in latent space.

    Parameters
    ----------
    valid : Tensor of bool, (B, T, H, W)
    generator : torch.Generator, optional

    Returns
    -------
    Tensor of bool, (B, T, H, W)
        With probability `HIDDEN_CELL_PROBABILITY` a galaxy loses `HIDDEN_CELL_FRACTION` of its
        cells (in every line), and with probability `HIDDEN_LINE_PROBABILITY` one whole line.
    """
    batch, lines, height, width = valid.shape
    uniform = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
    hide_cells = (uniform(batch, 1, 1, 1) < HIDDEN_CELL_PROBABILITY) & (
        uniform(batch, 1, height, width) < HIDDEN_CELL_FRACTION
    )
    line = torch.randint(lines, (batch,), generator=generator)
    hide_line = uniform(batch) < HIDDEN_LINE_PROBABILITY
    hidden_lines = torch.zeros(batch, lines, 1, 1, dtype=torch.bool)
    hidden_lines[torch.arange(batch), line, 0, 0] = hide_line
    return valid & ~(hide_cells.to(valid.device) | hidden_lines.to(valid.device))
