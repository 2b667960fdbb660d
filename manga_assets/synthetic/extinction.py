"""Dust attenuation curve used to redden the synthetic emission lines."""

from __future__ import annotations

import numpy as np

R_V = 3.1


def cardelli_k(wavelength_angstrom: float | np.ndarray, r_v: float = R_V) -> np.ndarray:
    """k(lambda) = A(lambda) / E(B-V) of Cardelli, Clayton & Mathis (1989).

    Parameters
    ----------
    wavelength_angstrom : float or array
        Wavelength in Angstrom, 3030-33333 A (optical/near-IR branches of the law).
    r_v : float, optional
        Total-to-selective extinction ratio, 3.1 by default.

    Returns
    -------
    numpy.ndarray
        k(lambda), e.g. about 2.53 at Halpha and 3.61 at Hbeta.
    """
    x = 1.0e4 / np.asarray(wavelength_angstrom, dtype=np.float64)
    if np.any((x < 0.3) | (x > 3.3)):
        raise ValueError("cardelli_k covers 3030-33333 Angstrom only")
    infrared = x < 1.1
    y = x - 1.82
    a_optical = (
        1
        + 0.17699 * y
        - 0.50447 * y**2
        - 0.02427 * y**3
        + 0.72085 * y**4
        + 0.01979 * y**5
        - 0.77530 * y**6
        + 0.32999 * y**7
    )
    b_optical = (
        1.41338 * y
        + 2.28305 * y**2
        + 1.07233 * y**3
        - 5.38434 * y**4
        - 0.62251 * y**5
        + 5.30260 * y**6
        - 2.09002 * y**7
    )
    a = np.where(infrared, 0.574 * x**1.61, a_optical)
    b = np.where(infrared, -0.527 * x**1.61, b_optical)
    return a * r_v + b
