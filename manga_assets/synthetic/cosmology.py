"""Distances in the cosmology of the DAPall: flat LambdaCDM, H0 = 100 h km/s/Mpc, Omega_m = 0.3."""

from __future__ import annotations

import numpy as np

from manga_assets.dap.datamodel import SPEED_OF_LIGHT_KMS

HUBBLE_CONSTANT = 100.0  # km/s/Mpc, i.e. distances in Mpc/h
OMEGA_MATTER = 0.3


def comoving_distance_mpc(z: float) -> float:
    """Line-of-sight comoving distance to redshift ``z``, Mpc/h."""
    grid = np.linspace(0.0, z, 257)
    inverse_e = 1.0 / np.sqrt(OMEGA_MATTER * (1.0 + grid) ** 3 + (1.0 - OMEGA_MATTER))
    return float(SPEED_OF_LIGHT_KMS / HUBBLE_CONSTANT * np.trapezoid(inverse_e, grid))


def angular_diameter_distance_mpc(z: float) -> float:
    """Angular-diameter distance to redshift ``z``, Mpc/h."""
    return comoving_distance_mpc(z) / (1.0 + z)


def luminosity_distance_mpc(z: float) -> float:
    """Luminosity distance to redshift ``z``, Mpc/h."""
    return comoving_distance_mpc(z) * (1.0 + z)
