"""Adding a real MAPS file to a synthetic release, unchanged, with its catalogue rows.

A synthetic release tests the pipeline on files this project wrote; a MAPS file written by the
DAP itself tests it on the real format. :func:`inject_maps` copies such a file into a release
written by :func:`manga_assets.synthetic.release.build_release` and appends its DRPall row and
its DAPall rows, taken from the file's primary header (the DAP copies the DRP's header there).
The catalogues keep their layout: an unnamed HDU 1 and one DAPALL table in DR15, named tables in
DR17.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits

from manga_assets.dap.datamodel import SPEED_OF_LIGHT_KMS
from manga_assets.sas.paths import PlateIFU, dapall_location, drpall_location, maps_location
from manga_assets.sas.releases import RELEASE_DAPTYPES, get_release
from manga_assets.synthetic.catalogues import MISSING
from manga_assets.synthetic.fitsfile import write_fits

# DRPall columns (lower case) and DAPall columns (upper case) filled from the primary header.
_HEADER_COLUMNS = ("OBJRA", "OBJDEC", "IFURA", "IFUDEC", "EBVGAL", "DRP3QUAL",
                   "MNGTARG1", "MNGTARG2", "MNGTARG3")  # fmt: skip


def _append_row(table: np.ndarray, values: dict[str, object]) -> np.ndarray:
    """``table`` with one more row: ``values`` by column name (any case), the rest 'missing'.

    Floats not given are -999 and integers 0, as in the synthetic catalogues; string columns are
    widened when a value is longer than the column.
    """
    by_lower = {name.lower(): value for name, value in values.items()}
    # Column by column: a FITS_rec converts logical and scaled columns only on field access.
    columns = {name: np.asarray(table[name]) for name in table.dtype.names}
    dtype = []
    for name, column in columns.items():
        if column.dtype.kind in "SU":
            longest = len(str(by_lower.get(name.lower(), "")))
            width = max(column.dtype.itemsize // (4 if column.dtype.kind == "U" else 1), longest)
            dtype.append((name, f"S{max(width, 1)}"))
        else:
            dtype.append((name, column.dtype.newbyteorder("="), column.shape[1:]))
    grown = np.zeros(len(table) + 1, dtype=dtype)
    for name, column in columns.items():
        text = column.dtype.kind in "SU"
        grown[name][:-1] = np.char.encode(column) if column.dtype.kind == "U" else column
        if name.lower() in by_lower:
            value = by_lower[name.lower()]
            grown[name][-1] = str(value).encode() if text else value
        elif column.dtype.kind == "f":
            grown[name][-1] = MISSING
    return grown


def _replace_table(path: Path, index: int, rows: np.ndarray) -> None:
    with fits.open(path, memmap=False) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    name = hdus[index].name or None
    hdus[index] = fits.BinTableHDU(data=rows, name=name)
    write_fits(path, fits.HDUList(hdus))


def inject_maps(root: Path | str, release_name: str, maps_file: Path | str) -> PlateIFU:
    """Copy a real MAPS file into the synthetic release at ``root`` and list it in the catalogues.

    Parameters
    ----------
    root : Path or str
        Root of a synthetic release (the folder that holds ``dr15/`` or ``dr17/``).
    release_name : str
        The release it was built as ('DR15', 'DR17').
    maps_file : Path or str
        A MAPS file written by the DAP, of the release's default DAPTYPE.

    Returns
    -------
    PlateIFU
        The galaxy added, from the file's PLATEIFU keyword.

    Raises
    ------
    ValueError
        The file's DAPTYPE is not the release's default, its PLATEIFU is not a valid designation,
        or the galaxy is already in the release's DRPall.
    """
    root, maps_file = Path(root), Path(maps_file)
    release = get_release(release_name)
    header = fits.getheader(maps_file, 0)
    plateifu = PlateIFU.parse(str(header.get("PLATEIFU", "")).strip())
    daptype = str(header.get("DAPTYPE", "")).strip()
    if daptype != release.daptype:
        raise ValueError(
            f"{maps_file}: DAPTYPE {daptype or 'missing'}; the synthetic {release.name} release "
            f"serves {release.daptype} files only. Inject a MAPS file of that DAPTYPE."
        )

    drpall_path, dapall_path = root / drpall_location(release), root / dapall_location(release)
    with fits.open(drpall_path, memmap=False) as hdul:
        drpall = hdul[1].data  # the MaNGA table: 'MANGA' in DR17, unnamed in DR15
        if str(plateifu) in {str(text).strip() for text in drpall["plateifu"]}:
            raise ValueError(f"{plateifu} is already in {drpall_path}; inject it only once")
        drpall_index = len(drpall)
        redshift = float(header["SCINPVEL"]) / SPEED_OF_LIGHT_KMS
        known = {key: header[key] for key in _HEADER_COLUMNS if key in header}
        drp_row = {
            **known, "plate": plateifu.plate, "ifudsgn": str(plateifu.ifu),
            "plateifu": str(plateifu), "mangaid": str(header.get("MANGAID", "")).strip(),
            "ifudesignsize": plateifu.ifu_size, "srvymode": "MaNGA dither", "z": redshift,
            "nsa_z": redshift, "nsa_zdist": redshift,
        }  # fmt: skip
        drpall_rows = _append_row(drpall, drp_row)
    _replace_table(drpall_path, 1, drpall_rows)

    dap_row = {
        **known, "PLATE": plateifu.plate, "IFUDESIGN": plateifu.ifu, "PLATEIFU": str(plateifu),
        "MANGAID": drp_row["mangaid"], "DRPALLINDX": drpall_index, "MODE": "CUBE",
        "DAPDONE": True, "Z": redshift, "NSA_Z": redshift, "NSA_ZDIST": redshift,
        "VERSDRP3": str(header.get("VERSDRP3", release.drpver)).strip(),
        "VERSDAP": str(header.get("VERSDAP", "")).strip(),
        "DAPQUAL": int(header.get("DAPQUAL", 0)),
    }  # fmt: skip
    with fits.open(dapall_path, memmap=False) as hdul:
        names = [hdu.name for hdu in hdul]
        tables = {name: hdul[name].data for name in names[1:]}
    if release.dapall_per_daptype:
        for daptype_name in RELEASE_DAPTYPES[release.name]:
            grown = _append_row(tables[daptype_name], {**dap_row, "DAPTYPE": daptype_name})
            _replace_table(dapall_path, names.index(daptype_name), grown)
    else:
        grown = tables["DAPALL"]
        for daptype_name in RELEASE_DAPTYPES[release.name]:
            grown = _append_row(grown, {**dap_row, "DAPTYPE": daptype_name})
        _replace_table(dapall_path, names.index("DAPALL"), grown)

    target = root / maps_location(release, plateifu)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(maps_file, target)
    return plateifu
