"""The explorer driven in headless Chromium as a person uses it (Playwright, the system's
Chromium): open the UMAP, click a galaxy, see its residual maps, label it, see the next one.

The galaxy page's screenshot is kept as ``test-artifacts/explorer_galaxy.png``. (The README's
``docs/`` screenshots are of the demo's products, whose models are trained for longer.)
"""

from __future__ import annotations

from pathlib import Path

import requests

from manga_assets_tests.test_ui.test_asset_graph_page import chromium, png_size

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 60_000

CANVAS_INK = """() => {
  const canvas = document.getElementById('umap');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return inked;
}"""
MAPS_LOADED = """() => ['img-residual', 'img-smoothed', 'img-reconstruction', 'img-lines']
  .every(id => { const image = document.getElementById(id);
                 return image.complete && image.naturalWidth > 0; })"""
THUMBNAILS_LOADED = """() => [...document.querySelectorAll('#neighbours img')]
  .every(image => image.complete && image.naturalWidth > 0)"""


def test_a_person_clicks_a_galaxy_on_the_umap_sees_its_residuals_and_labels_it(explorer):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(explorer.url + "/")
            page.wait_for_selector("body[data-ready=true]")
            galaxies = len(requests.get(explorer.url + "/api/galaxies", timeout=30).json())
            assert page.evaluate(CANVAS_INK) > 20 * galaxies, "the UMAP is not drawn"
            assert page.locator("#ranked tbody tr").count() == galaxies

            first = page.locator("#queue li").first.get_attribute("data-plateifu")
            position = page.evaluate("plateifu => explorer.pointPosition(plateifu)", first)
            page.mouse.click(position["x"], position["y"])
            page.wait_for_url(f"**/galaxy/{first}?model=ae")
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_function(MAPS_LOADED)
            assert page.locator("#neighbours img").count() > 0
            page.wait_for_function(THUMBNAILS_LOADED)
            assert first in page.locator("#title").inner_text()

            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "explorer_galaxy.png"
            page.screenshot(path=str(screenshot))
            assert png_size(screenshot) == (VIEWPORT["width"], VIEWPORT["height"])

            page.check("input[value=interesting]")
            page.fill("#note", "ring in [OIII]")
            page.click("#label-submit")
            page.wait_for_url(lambda url: f"/galaxy/{first}?" not in url)
            page.wait_for_selector("body[data-ready=true]")
            shown = page.url.split("/galaxy/")[1].split("?")[0]
            assert errors == []
        finally:
            browser.close()

    labels = requests.get(explorer.url + "/api/labels", timeout=30).json()
    assert [(r["plateifu"], r["label"], r["note"]) for r in labels] == [
        (first, "interesting", "ring in [OIII]")
    ]
    queue = requests.get(explorer.url + "/api/queue", params={"n": 1}, timeout=30).json()
    # The page went on to the queue's new first galaxy, another than the one labelled.
    assert shown != first and queue[0]["plateifu"] == shown
