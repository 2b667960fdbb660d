"""The one cube reader: what it accepts, and what it refuses with a message naming the file."""

import numpy as np
import pytest

from manga_assets.cubes.cube_file import Cube, CubeFormatError, read_cube, write_cube
from manga_assets.dap.datamodel import PROJECT_LINES

LINES = PROJECT_LINES[:3]


def _cube(grid: int = 4, lines=LINES) -> Cube:
    shape = (len(lines), grid, grid)
    rng = np.random.default_rng(0)
    return Cube(
        flux=rng.normal(size=shape).astype(np.float32),
        ivar=np.ones(shape, np.float32),
        mask=np.zeros(shape, bool),
        lines=tuple(lines),
    )


def test_a_written_cube_reads_back_identical(tmp_path):
    cube = _cube()
    write_cube(tmp_path / "1-2.npz", cube)
    read = read_cube(tmp_path / "1-2.npz", line_names=LINES, grid=4, finite=True)
    assert read.lines == LINES
    for name in ("flux", "ivar", "mask"):
        assert np.array_equal(getattr(read, name), getattr(cube, name))
    assert read.flux.dtype == np.float32 and read.mask.dtype == bool


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan", r"cube 1-2 \(.*1-2\.npz\) has non-finite values in flux; delete it and rebuild"),
        ("lines", r"cube 1-2 \(.*\) holds the lines .* in this order"),
        ("grid", r"cube 1-2 \(.*\) has flux of shape \(3, 5, 5\), expected \(3, 4, 4\)"),
        ("mask", r"cube 1-2 \(.*\) has mask of shape \(3, 4, 3\)"),
    ],
)
def test_a_cube_that_does_not_fit_is_refused_naming_the_file(tmp_path, change, message):
    cube = _cube(grid=5 if change == "grid" else 4)
    if change == "nan":
        cube.flux[0, 0, 0] = np.nan
    if change == "lines":
        cube = Cube(cube.flux, cube.ivar, cube.mask, LINES[::-1])
    if change == "mask":
        cube = Cube(cube.flux, cube.ivar, cube.mask[..., :3], cube.lines)
    write_cube(tmp_path / "1-2.npz", cube)
    with pytest.raises(CubeFormatError, match=message):
        read_cube(tmp_path / "1-2.npz", line_names=LINES, grid=4, finite=True)


def test_non_finite_values_pass_unless_asked_for(tmp_path):
    cube = _cube()
    cube.ivar[1, 2, 3] = np.inf
    write_cube(tmp_path / "1-2.npz", cube)
    assert not np.isfinite(read_cube(tmp_path / "1-2.npz").ivar).all()
    with pytest.raises(CubeFormatError, match="non-finite values in ivar"):
        read_cube(tmp_path / "1-2.npz", finite=True)


def test_a_broken_or_incomplete_file_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "1-2.npz").write_bytes(b"not a cube")
    with pytest.raises(CubeFormatError, match=r"cube 8-9 \(.*1-2\.npz\) cannot be read .*rebuild"):
        read_cube(tmp_path / "1-2.npz", plateifu="8-9")
    np.savez(tmp_path / "3-4.npz", flux=np.zeros((3, 4, 4)), mask=np.zeros((3, 4, 4), bool))
    with pytest.raises(CubeFormatError, match=r"lacks the arrays \['ivar', 'lines'\]"):
        read_cube(tmp_path / "3-4.npz")
    # Given the lines it needs, a reader accepts a file without a lines array as holding them.
    np.savez(tmp_path / "5-6.npz", flux=np.zeros((3, 4, 4)), ivar=np.zeros((3, 4, 4)),
             mask=np.zeros((3, 4, 4), bool))  # fmt: skip
    assert read_cube(tmp_path / "5-6.npz", line_names=LINES).lines == LINES
