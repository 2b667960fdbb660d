"""The webserver's asset-graph page, rendered by headless Chromium.

The lineage of the ``acquisition`` group (``/locations/manga_assets/asset-groups/acquisition/
lineage``) draws every asset of the group as a node, with the assets downstream of it as stubs;
the global lineage (``/asset-groups``) collapses each group to one node when there are several.
The screenshot is kept as ``test-artifacts/asset_graph.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
GROUP_LINEAGE = "/locations/manga_assets/asset-groups/acquisition/lineage"
WINDOW = (1400, 1000)
BUDGETS_MS = (15_000, 30_000)  # virtual time for the SPA; the second only if the first fell short


def chromium() -> str:
    """The Chromium binary (``$CHROMIUM`` or on PATH); fails, never skips, without one."""
    names = (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome")
    found = next((path for name in names if name and (path := shutil.which(name))), None)
    if not found:
        pytest.fail(
            "Chromium is not installed: `make test` installs it (apt-get install chromium), "
            "or point $CHROMIUM at a Chromium/Chrome binary"
        )
    return found


def headless(profile: Path, url: str, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium on ``url``; its stdout. The whole process group dies on timeout."""
    command = [
        chromium(),
        *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        url,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium did not finish {url} in {timeout:.0f} s")
    assert process.returncode == 0, f"Chromium failed on {url}:\n{err[-2000:]}"
    return out


class _Text(HTMLParser):
    """The visible text nodes of a document (outside script and style)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.texts.append(data.strip())


def rendered_texts(profile: Path, url: str, wanted: set[str]) -> tuple[list[str], int]:
    """The page's text nodes once ``wanted`` are among them (or after the longest budget)."""
    for budget in BUDGETS_MS:
        dom = headless(profile, url, f"--virtual-time-budget={budget}", "--dump-dom")
        parser = _Text()
        parser.feed(dom)
        if wanted <= set(parser.texts):
            break
    return parser.texts, budget


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_the_acquisition_graph_renders_with_its_assets(webserver, tmp_path):
    url = webserver.url + GROUP_LINEAGE
    acquisition = {"catalog", "maps_files", "line_cubes"}
    texts, budget = rendered_texts(tmp_path / "profile", url, acquisition)

    assert acquisition <= set(texts), f"asset names missing from the rendered page: {texts}"
    # Downstream assets of other groups are drawn as stubs at the edge of the graph.
    assert {"training_set", "agn_sample", "latents"} <= set(texts), texts
    # The two plates run are line_cubes' and maps_files' partitions, all of them materialised.
    assert texts.count("2 partitions") == 2, texts
    assert texts.count("100% filled") == 2, texts
    # catalog has one check; maps_files and line_cubes have two each (their WARN checks too).
    passed = [text for text in texts if re.fullmatch(r"(\d+) / \1 Passed", text)]
    assert "Materialized" in texts and len(passed) == 3, texts

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "asset_graph.png"
    screenshot.unlink(missing_ok=True)
    headless(
        tmp_path / "profile", url, f"--virtual-time-budget={budget}", f"--screenshot={screenshot}"
    )
    assert png_size(screenshot) == WINDOW
    # The graph canvas (right of the navigation, below the toolbar) holds drawn nodes: dark
    # label text, which an empty or still-loading canvas (light dots only) does not have.
    pixels = matplotlib.image.imread(screenshot)[170:, 250:, :3].mean(axis=2)
    assert (pixels < 0.5).sum() > 1000, "the screenshot's graph canvas is empty"


def test_the_global_lineage_shows_the_four_groups(webserver, tmp_path):
    groups = {"acquisition", "model", "analysis", "reports"}
    texts, _ = rendered_texts(tmp_path / "profile", webserver.url + "/asset-groups", groups)
    assert "Global asset lineage" in texts, texts
    assert groups <= set(texts), f"asset groups missing from the rendered page: {texts}"
