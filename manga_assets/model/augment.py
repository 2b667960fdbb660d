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
