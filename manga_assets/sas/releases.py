"""The MaNGA data releases the project knows, with the pipeline versions that made them.

sdss-access has no mapping from a release name to its DRP/DAP versions (upstream issue #73), so the
table lives here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    """One MaNGA data release.

    Attributes
    ----------
    name : str
        Release name as sdss-access spells it ('DR17').
    drpver, dapver : str
        Versions of the data-reduction and data-analysis pipelines.
    daptype : str
        Default DAP analysis type (binning + templates) whose MAPS files are used.
    dapall_per_daptype : bool
        True when the DAPall has one table extension per DAPTYPE (DAP 3.x, DR17); False when it has
        one extension named DAPALL with a DAPTYPE column (DAP 2.2.1, DR15).
    """

    name: str
    drpver: str
    dapver: str
    daptype: str
    dapall_per_daptype: bool

    @property
    def sas_dir(self) -> str:
        """The release's top folder on the SAS ('dr17')."""
        return self.name.lower()


RELEASES: dict[str, Release] = {
    "DR15": Release("DR15", "v2_4_3", "2.2.1", "HYB10-GAU-MILESHC", dapall_per_daptype=False),
    "DR17": Release("DR17", "v3_1_1", "3.1.0", "HYB10-MILESHC-MASTARSSP", dapall_per_daptype=True),
}

# DAPTYPEs each release publishes; the DAPall of DR17 has one extension for each.
RELEASE_DAPTYPES: dict[str, tuple[str, ...]] = {
    "DR15": ("VOR10-GAU-MILESHC", "HYB10-GAU-MILESHC"),
    "DR17": (
        "SPX-MILESHC-MASTARSSP",
        "VOR10-MILESHC-MASTARSSP",
        "HYB10-MILESHC-MASTARSSP",
        "HYB10-MILESHC-MASTARHC2",
    ),
}


def get_release(name: str) -> Release:
    """The release called ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If the release has no MaNGA DAP products known to the project.
    """
    key = name.upper()
    if key not in RELEASES:
        raise ValueError(
            f"unknown MaNGA release {name!r}; supported: {', '.join(RELEASES)} "
            "(set MANGA_RELEASE to one of them)"
        )
    return RELEASES[key]
