"""Drawing BPT line ratios that sit clearly inside one class region.

All ratios are log10 of observed line fluxes: x_nii = [NII]6585/Ha, x_sii = ([SII]6718+6732)/Ha,
x_oi = [OI]6302/Ha, y = [OIII]5008/Hb. The demarcation lines are the classifier's, imported from
:mod:`manga_assets.analysis.bpt` (written there once). The regions follow Marvin's
``bpt_kewley06``: star-forming below Kauffmann (2003) in [NII] and below Kewley (2001) in [SII] and
[OI]; composite between Kauffmann (2003) and Kewley (2001) in [NII] and star-forming in [SII] and
[OI]; AGN above Kewley (2001) in all three, split into Seyfert and LINER by Kewley (2006) in [SII]
and [OI].

One rule is stricter here than in the classifier: a drawn Seyfert (LINER) also lies above (below)
the Schawinski (2007) line in [NII]. The classifier rightly ignores that line (it has all three
diagrams), but a synthetic AGN should be the same kind in every diagram a reader may plot, and
in the [NII]-only rule other codes use. Since the drawn regions are subsets of the classifier's,
the classifier still gives every drawn galaxy its intended class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from manga_assets.analysis.bpt import (
    KAUFFMANN03_NII,
    KEWLEY01_NII,
    KEWLEY01_OI,
    KEWLEY01_SII,
    kauffmann03_nii,
    kewley01_nii,
    kewley01_oi,
    kewley01_sii,
    kewley06_oi,
    kewley06_sii,
    schawinski07_nii,
)

# Every drawn point keeps its class when moved by up to this much (dex) along either axis, so
# noise, the tiny differential reddening of neighbouring lines and the blending of a nucleus with
# its disk over a central aperture cannot move a galaxy into another class.
CLASS_MARGIN_DEX = 0.12


def _below(curve: Callable[[float], float], asymptote: float, x: float, y: float) -> bool:
    """True on the star-forming side of a hyperbolic line (left of its asymptote and below)."""
    return x < asymptote and y < curve(x)


def sf_nii(x: float, y: float) -> bool:
    """Star-forming in the [NII] diagram."""
    return _below(kauffmann03_nii, KAUFFMANN03_NII.asymptote, x, y)


def composite_nii(x: float, y: float) -> bool:
    """Between Kauffmann (2003) and Kewley (2001) in the [NII] diagram."""
    return not sf_nii(x, y) and _below(kewley01_nii, KEWLEY01_NII.asymptote, x, y)


def agn_nii(x: float, y: float) -> bool:
    """Above Kewley (2001) in the [NII] diagram."""
    return not _below(kewley01_nii, KEWLEY01_NII.asymptote, x, y)


def sf_sii(x: float, y: float) -> bool:
    """Star-forming in the [SII] diagram."""
    return _below(kewley01_sii, KEWLEY01_SII.asymptote, x, y)


def sf_oi(x: float, y: float) -> bool:
    """Star-forming in the [OI] diagram."""
    return _below(kewley01_oi, KEWLEY01_OI.asymptote, x, y)


def _robust(predicate: Callable[[float, float], bool], x: float, y: float, margin: float) -> bool:
    """``predicate`` holds on the corners and centre of a box of half-size ``margin``."""
    return all(
        predicate(x + dx, y + dy) for dx in (-margin, 0.0, margin) for dy in (-margin, 0.0, margin)
    )


@dataclass(frozen=True)
class BptRatios:
    """log10 line ratios that place a spectrum in the BPT diagrams (observed fluxes)."""

    nii_ha: float
    oiii_hb: float
    sii_ha: float
    oi_ha: float


# Boxes the rejection sampler draws from, per class: (x_nii, y, x_sii, x_oi) ranges. Together with
# the class predicates they shape plausible clouds like those of SDSS galaxies.
_BOXES: dict[str, tuple[tuple[float, float], ...]] = {
    "sf": ((-1.0, -0.35), (-0.9, 0.6), (-0.9, -0.15), (-1.8, -1.1)),
    "composite": ((-0.4, 0.02), (-0.6, 0.35), (-0.9, -0.15), (-1.8, -1.1)),
    "seyfert": ((-0.25, 0.35), (0.55, 1.1), (-0.6, 0.25), (-1.4, -0.2)),
    "liner": ((-0.1, 0.4), (-0.35, 0.3), (-0.35, 0.3), (-1.1, 0.1)),
}


def _nii_ok(kind: str) -> Callable[[float, float], bool]:
    if kind == "sf":
        return sf_nii
    if kind == "composite":
        return composite_nii
    if kind == "seyfert":
        return lambda x, y: agn_nii(x, y) and y > schawinski07_nii(x)
    return lambda x, y: agn_nii(x, y) and y < schawinski07_nii(x)


def _sii_ok(kind: str) -> Callable[[float, float], bool]:
    if kind in ("sf", "composite"):
        return sf_sii
    if kind == "seyfert":
        return lambda x, y: not sf_sii(x, y) and y > kewley06_sii(x)
    return lambda x, y: not sf_sii(x, y) and y < kewley06_sii(x)


def _oi_ok(kind: str) -> Callable[[float, float], bool]:
    if kind in ("sf", "composite"):
        return sf_oi
    if kind == "seyfert":
        return lambda x, y: not sf_oi(x, y) and y > kewley06_oi(x)
    return lambda x, y: not sf_oi(x, y) and y < kewley06_oi(x)


def _draw_until(
    rng: np.random.Generator, draw: Callable[[], tuple[float, ...]], accept: Callable[..., bool]
) -> tuple[float, ...]:
    # The boxes overlap their regions widely, so a few dozen tries suffice; the cap only guards
    # against a box edited into emptiness.
    for _ in range(10_000):
        values = draw()
        if accept(*values):
            return values
    raise RuntimeError("could not draw line ratios inside the requested BPT region")


def draw_bpt_ratios(
    rng: np.random.Generator, bpt_class: str, margin: float = CLASS_MARGIN_DEX
) -> BptRatios:
    """Draw BPT ratios at least ``margin`` dex inside the region of ``bpt_class``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    bpt_class : str
        'sf', 'composite', 'seyfert' or 'liner'.
    margin : float, optional
        Minimum distance (dex, along each axis) from every demarcation line that bounds the region.

    Returns
    -------
    BptRatios
    """
    if bpt_class not in _BOXES:
        raise ValueError(f"no BPT region for class {bpt_class!r}; known: {', '.join(_BOXES)}")
    nii_box, y_box, sii_box, oi_box = _BOXES[bpt_class]
    nii_ok, sii_ok, oi_ok = _nii_ok(bpt_class), _sii_ok(bpt_class), _oi_ok(bpt_class)

    def sf_sequence(x: float, y: float) -> bool:
        # Star-forming galaxies hug the Kauffmann line rather than fill the whole region below it.
        return bpt_class != "sf" or y > kauffmann03_nii(x) - 0.5

    x_nii, y = _draw_until(
        rng,
        lambda: (rng.uniform(*nii_box), rng.uniform(*y_box)),
        lambda x, yy: _robust(nii_ok, x, yy, margin) and sf_sequence(x, yy),
    )
    (x_sii,) = _draw_until(
        rng, lambda: (rng.uniform(*sii_box),), lambda x: _robust(sii_ok, x, y, margin)
    )
    (x_oi,) = _draw_until(
        rng, lambda: (rng.uniform(*oi_box),), lambda x: _robust(oi_ok, x, y, margin)
    )
    return BptRatios(nii_ha=x_nii, oiii_hb=y, sii_ha=x_sii, oi_ha=x_oi)


def star_forming_sequence(nii_ha: np.ndarray, offset: float) -> np.ndarray:
    """[OIII]/Hb of star-forming gas with [NII]/Ha ``nii_ha``: ``offset`` dex below Kauffmann."""
    return KAUFFMANN03_NII.y_at(np.minimum(nii_ha, -0.2)) - offset


def sf_sii_at(oiii_hb: np.ndarray, offset: float) -> np.ndarray:
    """[SII]/Ha ``offset`` dex left of Kewley (2001) at [OIII]/Hb ``oiii_hb`` (< 1.1)."""
    return KEWLEY01_SII.x_at(np.minimum(oiii_hb, 1.1)) - offset


def sf_oi_at(oiii_hb: np.ndarray, offset: float) -> np.ndarray:
    """[OI]/Ha ``offset`` dex left of Kewley (2001) at [OIII]/Hb ``oiii_hb`` (< 1.1)."""
    return KEWLEY01_OI.x_at(np.minimum(oiii_hb, 1.1)) - offset
