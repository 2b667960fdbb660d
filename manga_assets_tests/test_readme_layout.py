"""README's layout section names every module of the package, and only modules that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_modules() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n") :]
    block = section[section.index("```\n") + 4 :]
    block = block[: block.index("```")]
    modules, folders = set(), []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name)
        elif name.endswith(".py"):
            modules.add("".join(folders) + name)
    return modules


def test_the_readme_layout_lists_every_module_and_no_other():
    tree = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "manga_assets").rglob("*.py")
        # Package markers are described by their folder's line.
        if path.name != "__init__.py" or path.parent.name == "manga_assets"
    }
    listed = _layout_modules()
    missing, stale = sorted(tree - listed), sorted(listed - tree)
    assert not missing, f"modules missing from README's layout: {missing}"
    assert not stale, f"README's layout names modules that do not exist: {stale}"
