"""The explorer's JSON interface and images, over a real pipeline run's products."""

from __future__ import annotations

import os
import re
import statistics
import struct
import time
from importlib import resources

import pandas as pd
import pytest
import requests

from manga_assets.analysis.anomaly import COMPONENTS
from manga_assets.explorer.images import KINDS
from manga_assets.explorer.products import RELOAD_CHECK_S
from manga_assets_tests.test_explore.conftest import serving

# The target is 100 ms per page's JSON on 10,000 galaxies (benchmarks/explorer.py).
JSON_BUDGET_S = 0.1


def get(explorer, path: str, **params) -> requests.Response:
    return requests.get(explorer.url + path, params=params, timeout=60)


def post_label(explorer, **body) -> requests.Response:
    return requests.post(explorer.url + "/api/labels", json=body, timeout=60)


def scores(explorer, variant: str = "ae") -> pd.DataFrame:
    return pd.read_parquet(explorer.data_dir / "products" / variant / "anomaly_scores.parquet")


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", body[16:24])


def test_a_galaxy_page_has_its_scores_components_neighbours_and_images(explorer):
    table = scores(explorer)
    top = table.sort_values("rank").iloc[0]
    response = get(explorer, f"/api/galaxy/{top.plateifu}", model="ae")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["plateifu"] == top.plateifu and page["model"] == "ae"
    assert page["scores"]["anomaly_score"] == pytest.approx(top.anomaly_score)
    assert page["scores"]["rank"] == 1
    assert 0 < page["p_value"] <= 1 and page["p_value"] <= page["q_value"] <= 1
    assert {row["component"] for row in page["components"]} == set(COMPONENTS)
    for row in page["components"]:
        assert row["p"] == pytest.approx(top[f"p_{row['component']}"])
    neighbours = pd.read_parquet(explorer.data_dir / "products" / "ae" / "neighbours.parquet")
    expected = neighbours[neighbours.plateifu == top.plateifu].sort_values("neighbour_rank")
    assert [n["plateifu"] for n in page["neighbours"]] == list(expected.neighbour_plateifu)
    assert set(page["images"]) == set(KINDS)
    latents = pd.read_parquet(explorer.data_dir / "products" / "ae" / "latents.parquet")
    assert page["model_id"] == latents.model_id.iloc[0]


def test_every_image_of_a_galaxy_is_a_png_served_with_cache_headers(explorer):
    plateifu = scores(explorer, "vae").sort_values("rank").plateifu.iloc[0]
    page = get(explorer, f"/api/galaxy/{plateifu}", model="vae").json()
    urls = [*page["images"].values(), page["neighbours"][0]["thumbnail"]]
    for url in urls:
        response = requests.get(explorer.url + url, timeout=60)
        assert response.status_code == 200, (url, response.text)
        width, height = png_size(response.content)
        assert width > 50 and height > 50, url
        assert "max-age" in response.headers["Cache-Control"]
        again = requests.get(
            explorer.url + url, headers={"If-None-Match": response.headers["ETag"]}, timeout=60
        )
        assert again.status_code == 304
    cached = list((explorer.data_dir / "products" / "explorer_cache").rglob("*.png"))
    assert len(cached) == len(urls)
    # The model's images are kept under its model_id: a retrained model gets new ones.
    assert any(page["model_id"] in str(path) for path in cached)


def test_the_page_json_answers_within_budget(explorer):
    table = scores(explorer)
    times = []
    for plateifu in table.plateifu:
        start = time.perf_counter()
        response = get(explorer, f"/api/galaxy/{plateifu}", model="ae")
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    assert statistics.median(times) < JSON_BUDGET_S, times
    assert max(times) < 5 * JSON_BUDGET_S, times


def test_unknown_galaxies_and_models_are_404_json(explorer):
    for path, params in (
        ("/api/galaxy/9999-9999", {"model": "ae"}),
        ("/api/galaxy/not-a-galaxy", {}),
        ("/api/queue", {"model": "cnn"}),
        ("/galaxy/9999-9999", {}),
        ("/api/nothing", {}),
    ):
        response = get(explorer, path, **params)
        assert response.status_code == 404, (path, response.status_code)
        assert response.json()["error"], path


def test_a_label_is_stored_with_reviewer_model_and_score_and_leaves_the_queue(explorer):
    queue = get(explorer, "/api/queue", model="ae", n=5).json()
    assert all("plateifu" in row for row in queue)
    first = queue[0]["plateifu"]
    response = post_label(explorer, plateifu=first, label="artefact", note="a seam", model="ae")
    assert response.status_code == 201, response.text
    row = response.json()
    table = scores(explorer).set_index("plateifu")
    latents = pd.read_parquet(explorer.data_dir / "products" / "ae" / "latents.parquet")
    assert row["plateifu"] == first and row["label"] == "artefact" and row["note"] == "a seam"
    assert row["reviewer"] == "tester"
    assert row["model_id"] == latents.model_id.iloc[0]
    assert row["score"] == pytest.approx(table.loc[first, "anomaly_score"])
    after = get(explorer, "/api/queue", model="ae", n=5).json()
    assert first not in [r["plateifu"] for r in after]
    assert after[0]["plateifu"] == queue[1]["plateifu"]
    stored = get(explorer, "/api/labels").json()
    assert [r["plateifu"] for r in stored if r["note"] == "a seam"] == [first]
    page = get(explorer, f"/api/galaxy/{first}", model="ae").json()
    assert [label["label"] for label in page["labels"]] == ["artefact"]


def test_another_reviewer_still_has_the_galaxy_in_their_queue(explorer, data_dir):
    labelled = {row["plateifu"] for row in get(explorer, "/api/labels").json()}
    if not labelled:
        first = get(explorer, "/api/queue", n=1).json()[0]["plateifu"]
        assert post_label(explorer, plateifu=first, label="interesting").status_code == 201
        labelled = {first}
    with serving(data_dir, reviewer="second") as other:
        queue = {row["plateifu"] for row in get(other, "/api/queue", n=1000).json()}
        assert labelled <= queue
        # The first reviewer's labels are all still there, under their name.
        reviewers = {row["reviewer"] for row in get(other, "/api/labels").json()}
        assert reviewers == {"tester"}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"plateifu": "9999-9999", "label": "interesting"}, 404, "not in the catalogue"),
        ({"plateifu": "../../etc", "label": "interesting"}, 400, "not a MaNGA plate-IFU"),
        ({"plateifu": None, "label": "interesting"}, 400, "not a MaNGA plate-IFU"),
        ({"label": "interesting"}, 400, "not a MaNGA plate-IFU"),
        ({"plateifu": "GOOD", "label": "boring"}, 400, "not one of"),
        ({"plateifu": "GOOD", "label": "interesting", "note": 3}, 400, "note"),
        ({"plateifu": "GOOD", "label": "interesting", "model": "cnn"}, 404, "no products"),
        (["GOOD", "interesting"], 400, "JSON object"),
    ],
)
def test_a_bad_label_gets_4xx_with_a_clear_message_and_nothing_is_stored(
    explorer, body, status, message
):
    good = scores(explorer).plateifu.iloc[0]
    if isinstance(body, dict):
        body = {key: good if value == "GOOD" else value for key, value in body.items()}
    else:
        body = [good if value == "GOOD" else value for value in body]
    before = get(explorer, "/api/labels").json()
    response = requests.post(explorer.url + "/api/labels", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert get(explorer, "/api/labels").json() == before


def test_a_body_that_is_not_json_is_refused(explorer):
    response = requests.post(explorer.url + "/api/labels", data=b"label=interesting", timeout=60)
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


def test_anomalies_at_a_false_discovery_rate(explorer):
    everything = get(explorer, "/api/anomalies", model="ae", fdr=1.0).json()
    assert len(everything) == len(scores(explorer))
    for fdr in (0.05, 0.1, 0.5):
        passing = get(explorer, "/api/anomalies", model="ae", fdr=fdr).json()
        assert all(row["q_value"] <= fdr for row in passing)
        assert all("plateifu" in row for row in passing)
        # The passing set is the galaxies whose q-value is within the rate, no fewer.
        assert len(passing) == sum(row["q_value"] <= fdr for row in everything)
    assert get(explorer, "/api/anomalies", fdr="two").status_code == 400
    assert get(explorer, "/api/anomalies", fdr=1.5).status_code == 400


def test_the_listing_has_every_galaxy_with_its_umap_position_and_bpt_class(explorer):
    listing = get(explorer, "/api/galaxies", model="vae").json()
    umap = pd.read_parquet(explorer.data_dir / "products" / "vae" / "umap.parquet")
    assert sorted(row["plateifu"] for row in listing) == sorted(umap.plateifu)
    by_galaxy = umap.set_index("plateifu")
    for row in listing:
        assert row["umap_x"] == pytest.approx(by_galaxy.loc[row["plateifu"], "umap_x"])
    assert [row["rank"] for row in listing] == sorted(row["rank"] for row in listing)
    agn = pd.read_parquet(explorer.data_dir / "products" / "agn_sample.parquet")
    classes = dict(zip(agn.plateifu, agn.bpt_class, strict=True))
    assert all(row["bpt_class"] == classes.get(row["plateifu"], "") for row in listing)


def test_rewritten_scores_are_served_without_a_restart(tmp_path, pipeline_data):
    from manga_assets_tests.test_explore.conftest import copy_data_dir

    data_dir = copy_data_dir(pipeline_data, tmp_path)
    with serving(data_dir) as explorer:
        path = data_dir / "products" / "ae" / "anomaly_scores.parquet"
        table = pd.read_parquet(path)
        plateifu = table.plateifu.iloc[0]
        before = get(explorer, f"/api/galaxy/{plateifu}", model="ae").json()
        table.loc[0, "anomaly_score"] = 42.0
        table.to_parquet(path)
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        time.sleep(RELOAD_CHECK_S + 0.2)
        after = get(explorer, f"/api/galaxy/{plateifu}", model="ae").json()
        assert before["scores"]["anomaly_score"] != 42.0
        assert after["scores"]["anomaly_score"] == 42.0


def test_the_pages_load_nothing_from_outside_the_package():
    static = resources.files("manga_assets.explorer") / "static"
    names = {item.name for item in static.iterdir()}
    assert {"index.html", "galaxy.html", "explorer.js", "explorer.css"} <= names
    for name in names:
        text = (static / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), name
        for reference in re.findall(r'(?:src|href)="(/static/[^"]+)"', text):
            assert reference.removeprefix("/static/") in names, (name, reference)
