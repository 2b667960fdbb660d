from __future__ import annotations

import pytest
import torch

from manga_assets.model.augment import (
    GROUP_ORDER,
    compose,
    dihedral,
    inverse,
    random_dihedral,
)


@pytest.fixture
def image() -> torch.Tensor:
    return torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)


def test_eight_distinct_symmetries_with_identity(image: torch.Tensor):
    images = [dihedral(image, element) for element in range(GROUP_ORDER)]
    assert torch.equal(images[0], image)
    assert len({tuple(img.flatten().tolist()) for img in images}) == GROUP_ORDER
    # Each is a permutation of the pixels of every map.
    for img in images:
        assert torch.equal(img.flatten(-2).sort(-1).values, image.flatten(-2).sort(-1).values)


def test_group_action_closure_and_inverses(image: torch.Tensor):
    for first in range(GROUP_ORDER):
        for second in range(GROUP_ORDER):
            both = dihedral(dihedral(image, first), second)
            assert torch.equal(both, dihedral(image, compose(first, second)))
        assert torch.equal(dihedral(dihedral(image, first), inverse(first)), image)
    # Not commutative: D4 is not abelian.
    assert any(compose(a, b) != compose(b, a) for a in range(8) for b in range(8))


def test_random_symmetry_keeps_maps_and_mask_aligned(image: torch.Tensor):
    valid = (image % 3) != 0
    x = torch.where(valid, image + 1.0, torch.zeros_like(image))
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        x_out, valid_out, element = random_dihedral(x, valid, generator)
        seen.add(element)
        assert torch.equal(x_out, dihedral(x, element))
        assert torch.equal(valid_out, dihedral(valid, element))
        assert torch.equal(x_out == 0, ~valid_out)  # zeros are exactly the invalid pixels
    assert seen == set(range(GROUP_ORDER))


def test_same_seed_same_choices(image: torch.Tensor):
    valid = torch.ones_like(image, dtype=torch.bool)
    first = [random_dihedral(image, valid, torch.Generator().manual_seed(5))[2] for _ in range(3)]
    assert len(set(first)) == 1


def test_bad_inputs_are_refused(image: torch.Tensor):
    with pytest.raises(ValueError, match="must be in 0..7"):
        dihedral(image, 8)
    with pytest.raises(ValueError, match="square maps"):
        dihedral(torch.zeros(4, 5), 1)
    with pytest.raises(ValueError, match="same shape"):
        random_dihedral(image, torch.ones(2, 3, 5, 4, dtype=torch.bool))
