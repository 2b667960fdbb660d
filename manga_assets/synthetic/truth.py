"""The truth table: what was planted in each cube of a synthetic release."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from manga_assets.atomic import atomic_path
from manga_assets.synthetic.physics import centre_ratios
from manga_assets.synthetic.population import GalaxyParams

TRUTH_FILENAME = "truth.parquet"


def truth_row(
    params: GalaxyParams, has_maps: bool, centre: dict[str, float] | None = None
) -> dict[str, object]:
    """One galaxy's truth; ``has_maps`` says whether a complete, healthy MAPS file was written.

    The log10 ratios are those at the galaxy centre (observed fluxes, BPT lines; see
    :func:`~manga_assets.synthetic.physics.centre_ratios`), also for cubes without a MAPS file;
    ``centre`` passes them when the galaxy's model is at hand. ``world`` says which world drew the
    galaxy and ``oddity`` what is odd about a normal galaxy of the realistic world ('none' for
    most; its anomaly_kind stays 'none').
    """
    ratios = centre if centre is not None else centre_ratios(params)
    return {
        "plateifu": str(params.plateifu),
        "mangaid": params.mangaid,
        "plate": params.plateifu.plate,
        "ifudesign": params.plateifu.ifu,
        "ifu_size": params.ifu_size,
        "bpt_class": params.bpt_class,
        "is_agn": params.is_agn,
        "anomaly_kind": params.anomaly_kind,
        "anomaly_line": params.anomaly_line or "none",
        "oddity": params.oddity_kind,
        "world": params.world,
        "fault": params.fault,
        "catalogue_case": params.catalogue_case,
        "dap_done": params.dap_done,
        "has_maps": has_maps,
        "z": params.z,
        "inclination": params.inclination,
        "axis_ratio": params.axis_ratio,
        "position_angle": params.position_angle,
        "re_arcsec": params.re_arcsec,
        "log_mass": params.log_mass,
        "ebv_centre": params.ebv_centre,
        "ha_disk_peak": params.disk.ha_peak,
        "n_nuclei": len(params.nuclei),
        "mngtarg3": params.mngtarg3,
        "log_nii_ha": ratios["nii_ha"],
        "log_oiii_hb": ratios["oiii_hb"],
        "log_sii_ha": ratios["sii_ha"],
        "log_oi_ha": ratios["oi_ha"],
        "log_heii_hb": ratios["heii_hb"],
    }


def write_truth(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Write the truth table to ``path`` (Parquet) atomically."""
    with atomic_path(path) as temporary:
        pd.DataFrame(list(rows)).to_parquet(temporary, index=False)
