"""Reading the latent matrix out of a latents table.

A latents table (``{ae,vae}/latents.parquet``) has one row per galaxy: ``plateifu``,
``model_id``, ``cube_digest``, latent columns ``z00``, ``z01``, ... (as many as the model's latent
dimension), ``recon_error``, ``median_snr``, ``integrated_snr`` and the per-line columns of
``manga_assets.model.inference.per_line_columns`` (``chi2_<line>``, ``n_<line>``,
``peak_<line>``, ``extended_<line>``). Every whole-sample analysis starts by pulling the latent
columns out as a float array, so the column rule and the finite-value check live here once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

_LATENT_COLUMN = re.compile(r"^z\d+$")

# How many offending galaxies an error message lists before it says "and N more".
_MAX_NAMED = 5


def latent_columns(latents: pd.DataFrame) -> list[str]:
    """The latent columns of ``latents`` (``z`` followed by digits), in numeric order.

    Raises
    ------
    ValueError
        If the table has no latent column.
    """
    columns = [c for c in latents.columns if _LATENT_COLUMN.match(str(c))]
    if not columns:
        raise ValueError(
            "latents table has no latent columns (expected 'z00', 'z01', ...); "
            f"columns are {list(latents.columns)!r}"
        )
    return sorted(columns, key=lambda c: int(str(c)[1:]))


def name_galaxies(plateifus: Sequence[str]) -> str:
    """A short, readable list of plate-IFUs for an error message."""
    shown = ", ".join(str(p) for p in plateifus[:_MAX_NAMED])
    extra = len(plateifus) - _MAX_NAMED
    return f"{shown} and {extra} more" if extra > 0 else shown


def require_finite(values: np.ndarray, plateifus: Sequence[str], what: str) -> None:
    """Raise if any row of ``values`` holds NaN or infinity, naming the galaxies.

    Parameters
    ----------
    values : ndarray, (N,) or (N, D)
        One row per galaxy.
    plateifus : sequence of str
        The N galaxies, in row order.
    what : str
        What the values are, for the message ('latents', 'recon_error').

    Raises
    ------
    ValueError
        If a row is not finite.
    """
    finite = np.isfinite(values)
    bad_rows = ~finite.all(axis=1) if finite.ndim == 2 else ~finite
    if bad_rows.any():
        bad = [str(p) for p in np.asarray(plateifus, dtype=object)[bad_rows]]
        raise ValueError(
            f"{what} of {len(bad)} galaxies are NaN or infinite: {name_galaxies(bad)}; "
            "re-run inference for them or drop them before the analysis"
        )


def latent_matrix(
    latents: pd.DataFrame, columns: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The plate-IFUs and the (N, D) float64 latent matrix of a latents table.

    Parameters
    ----------
    latents : DataFrame
        With ``plateifu`` and the latent columns.
    columns : sequence of str, optional
        Latent columns to use; by default every ``z<digits>`` column.

    Returns
    -------
    plateifus : ndarray of str, (N,)
    matrix : ndarray of float64, (N, D)

    Raises
    ------
    ValueError
        If ``plateifu`` is missing or repeated, or a latent value is NaN or infinite (the message
        names the galaxies).
    """
    if "plateifu" not in latents.columns:
        raise ValueError("latents table has no 'plateifu' column")
    plateifus = latents["plateifu"].astype(str).to_numpy()
    repeated = pd.Index(plateifus)[pd.Index(plateifus).duplicated()].unique()
    if len(repeated):
        raise ValueError(f"plate-IFUs repeated in the latents table: {name_galaxies(repeated)}")
    columns = list(columns) if columns is not None else latent_columns(latents)
    matrix = latents[columns].to_numpy(dtype=np.float64)
    require_finite(matrix, plateifus, "latents")
    return plateifus, matrix


def standardise(matrix: np.ndarray) -> np.ndarray:
    """Each column scaled to zero mean and unit variance.

    Latent dimensions of an autoencoder can differ in scale by orders of magnitude, and a distance
    would then be set by the widest one alone. A constant column is centred but not scaled.
    """
    mean = matrix.mean(axis=0)
    std = matrix.std(axis=0)
    std[std == 0] = 1.0
    return (matrix - mean) / std
