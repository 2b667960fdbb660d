import base64
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manga_assets.analysis.agn import build_agn_sample
from manga_assets.analysis.anomaly import anomaly_scores
from manga_assets.analysis.bpt import classify_centre
from manga_assets.analysis.neighbours import latent_neighbours
from manga_assets.analysis.report import (
    EXPLANATIONS_FIGURE,
    REPORT_NAME,
    deciding_line,
    most_anomalous_agn,
    write_report,
)
from manga_assets_tests.test_analysis.helpers import LINES, cube_from_ratios, latents_table

N_GALAXIES = 10
SIZE = 12
# (x_nii, x_sii, x_oi, y) of the galaxies, cycling: star-forming, Seyfert, LINER.
CENTRES = ((-0.7, -0.6, -1.6, -0.3), (0.1, 0.0, -0.5, 1.0), (0.2, 0.1, -0.3, 0.0))


class ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def galaxy_cube(i: int):
    y, x = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(y - (SIZE - 1) / 2, x - (SIZE - 1) / 2)
    ratios = np.broadcast_to(np.asarray(CENTRES[i % 3]), (SIZE, SIZE, 4)).copy()
    ratios[..., 3] -= 0.05 * radius
    flux, ivar, mask = cube_from_ratios(ratios)
    flux *= np.exp(-radius / 3.0)
    mask[:, radius > SIZE / 2] = True
    flux[mask] = 0.0
    return flux, ivar, mask


@pytest.fixture(scope="module")
def inputs():
    latents = latents_table(N_GALAXIES, dim=4, seed=5)
    plateifus = list(latents["plateifu"])
    cubes = {p: galaxy_cube(i) for i, p in enumerate(plateifus)}
    bpt_rows = pd.DataFrame(
        [{"plateifu": p, **classify_centre(*cubes[p], LINES).as_row()} for p in plateifus]
    )
    catalog = pd.DataFrame({"plateifu": plateifus, "mngtarg3": 0})
    agn_sample, _ = build_agn_sample(bpt_rows, catalog, None)
    rng = np.random.default_rng(0)
    models = ("ae", "vae")
    umaps = {
        m: pd.DataFrame(
            {
                "plateifu": plateifus,
                "umap_x": rng.normal(size=N_GALAXIES),
                "umap_y": rng.normal(size=N_GALAXIES),
            }
        )  # fmt: skip
        for m in models
    }
    scores = {
        m: anomaly_scores(latents, k=3) for m in models
    }
    neighbours = {m: latent_neighbours(latents, k=3) for m in models}
    # One neighbour's cube is missing: its gallery row is blanked, the report still written.
    missing = neighbours["vae"]["neighbour_plateifu"].iloc[0]

    def load_cube(plateifu):
        if plateifu == missing:
            raise KeyError(plateifu)
        return cubes[plateifu]

    return dict(umaps=umaps, anomaly_scores=scores, neighbours=neighbours,
                agn_sample=agn_sample, load_cube=load_cube)  # fmt: skip


def image_sources(html_path: Path) -> list[str]:
    parser = ImageSources()
    parser.feed(html_path.read_text(encoding="utf-8"))
    return parser.sources


def test_report_links_only_existing_figures(tmp_path, inputs):
    assert inputs["agn_sample"]["is_agn"].sum() >= 2
    evaluation = {"ae": {"anomaly_auc": 0.9}, "vae": {"anomaly_auc": float("nan")}}
    written = write_report(tmp_path / "reports", primary_model="vae", evaluation=evaluation,
                           n_gallery=3, n_neighbours=2, **inputs)  # fmt: skip
    assert written.html_path == tmp_path / "reports" / REPORT_NAME
    sources = image_sources(written.html_path)
    assert len(sources) == 3
    for source in sources:
        assert not Path(source).is_absolute()
        assert (written.html_path.parent / source).is_file(), source
    assert {p.name for p in written.figure_paths} == set(sources)
    text = written.html_path.read_text(encoding="utf-8")
    assert "anomaly_auc" in text and "most anomalous AGN" in text
    # The score's meaning is measured on the sample, not assumed from Gaussian tails.
    scores = inputs["anomaly_scores"]["vae"]["anomaly_score"]
    above_1, above_2 = (scores > 1).mean(), (scores > 2).mean()
    assert f"here {above_1:.1%} of the galaxies score above 1 (nominal 10%)" in text
    assert f"and {above_2:.1%} above 2 (nominal 1%; anomalies add to both) (vae)" in text
    assert not list((tmp_path / "reports").glob(".*"))


def test_thumbnail_is_a_small_png(tmp_path, inputs):
    written = write_report(tmp_path, n_gallery=2, n_neighbours=1, **inputs)
    thumbnail = base64.b64decode(written.thumbnail_png_base64)
    assert thumbnail.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(thumbnail) < 100_000


def test_report_without_agn_has_only_the_umap_figure(tmp_path, inputs):
    no_agn = inputs["agn_sample"].assign(is_agn=False, agn_source="")
    written = write_report(tmp_path, **{**inputs, "agn_sample": no_agn})
    sources = image_sources(written.html_path)
    assert len(sources) == 1
    assert (tmp_path / sources[0]).is_file()
    assert "No AGN in the sample" in written.html_path.read_text(encoding="utf-8")


def test_unknown_primary_model_raises(tmp_path, inputs):
    with pytest.raises(ValueError, match="primary_model 'gpt'"):
        write_report(tmp_path, primary_model="gpt", **inputs)


@dataclass
class FakeExplanation:
    lines: tuple[str, ...]
    smoothed_residual: np.ndarray
    coherent_peak: np.ndarray


def test_explanations_show_the_deciding_line_beside_its_residual(tmp_path, inputs):
    """The report's explanations draw, for each top AGN, the line that decided its score; a
    galaxy the model cannot be run on is left out, the others still drawn."""
    scores = inputs["anomaly_scores"]["ae"]
    top = most_anomalous_agn(scores, inputs["agn_sample"], 2)
    failing = str(top["plateifu"].iloc[1])
    asked: list[str] = []

    def explain(plateifu):
        asked.append(plateifu)
        if plateifu == failing:
            raise RuntimeError("model unreadable")
        peak = np.zeros(len(LINES))
        peak[LINES.index("OIII-5008")] = 7.0  # where no line decided, the highest peak shows
        return FakeExplanation(tuple(LINES), np.ones((len(LINES), SIZE, SIZE)), peak)

    written = write_report(tmp_path, explain=explain, n_gallery=2, n_neighbours=1, **inputs)
    assert asked[:2] == list(top["plateifu"])
    assert (tmp_path / EXPLANATIONS_FIGURE) in written.figure_paths
    assert EXPLANATIONS_FIGURE in image_sources(written.html_path)
    assert "Why the most anomalous AGN are anomalous" in written.html_path.read_text()
    first = top.iloc[0]
    expected = first["anomaly_line"] if first["anomaly_line"] in LINES else "OIII-5008"
    assert deciding_line(first, LINES, explain(str(first["plateifu"])).coherent_peak) == expected
    assert deciding_line({"anomaly_line": "HeII-4687"}, LINES, np.arange(len(LINES))) == (
        "HeII-4687"
    )


def test_without_a_model_the_report_has_no_explanations(tmp_path, inputs):
    written = write_report(tmp_path, n_gallery=2, n_neighbours=1, **inputs)
    assert EXPLANATIONS_FIGURE not in image_sources(written.html_path)
