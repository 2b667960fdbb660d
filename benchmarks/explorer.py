"""The explorer on a survey-sized data directory: a galaxy page's JSON and its uncached images.

Targets (issue "The human loop"): a galaxy page's JSON in under 100 ms and its images in under
1 s uncached, on 10,000 galaxies.

A 10,000-galaxy products directory is fabricated from a real run's (``--source``, e.g. the demo's
``demo/data``): every table's rows are replicated under new plate-IFUs (plates 20000 on), UMAP
positions jittered, ranks recomputed, neighbours renamed, and each new cube is a hard link to the
source cube it copies (no extra disk). The published models are copied. The explorer then serves
it on 127.0.0.1 from this process, and the benchmark times, over HTTP:

- the products' load at start-up;
- ``GET /api/galaxy/{plateifu}`` for random galaxies (warm server);
- every image kind of random galaxies, with the image cache empty (rendered on request), one
  request at a time, and a page's images requested together as a browser does;
- ``GET /api/galaxies`` (the home page's listing) and ``GET /api/queue``.

    python benchmarks/explorer.py --source demo/data [--galaxies 10000] [--dir explorer_bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from manga_assets.explorer.images import KINDS
from manga_assets.layout import DataLayout
from manga_assets.sas.paths import PlateIFU

GALAXIES_PER_PLATE = 20
FIRST_PLATE = 20000


def new_names(n: int) -> list[str]:
    return [
        f"{FIRST_PLATE + i // GALAXIES_PER_PLATE}-{1901 + i % GALAXIES_PER_PLATE}" for i in range(n)
    ]


def replicate(table: pd.DataFrame, source_of: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Rows of ``table`` (one per source galaxy) repeated in ``source_of`` order, renamed."""
    by_name = table.set_index("plateifu")
    copied = by_name.reindex(source_of).reset_index(drop=True)
    copied.insert(0, "plateifu", names)
    return copied


def fabricate(source: Path, target: Path, n: int, seed: int = 0) -> Path:
    """A products directory of ``n`` galaxies made from ``source``'s (see the module notes)."""
    rng = np.random.default_rng(seed)
    src, dst = DataLayout(source), DataLayout(target)
    if target.exists():
        shutil.rmtree(target)
    dst.products.mkdir(parents=True)
    scores = pd.read_parquet(src.product("ae/anomaly_scores.parquet"))
    originals = scores["plateifu"].to_numpy()
    source_of = originals[rng.integers(0, len(originals), n)]
    names = new_names(n)
    rename = dict(zip(names, source_of, strict=True))
    for name in ("catalog", "agn_sample"):
        table = pd.read_parquet(src.product(f"{name}.parquet"))
        replicate(table, source_of, names).to_parquet(dst.product(f"{name}.parquet"))
    for variant in ("ae", "vae"):
        (dst.products / variant).mkdir()
        for name in ("latents", "anomaly_scores"):
            table = pd.read_parquet(src.product(f"{variant}/{name}.parquet"))
            table = replicate(table, source_of, names)
            if name == "anomaly_scores":
                # Slightly different scores, so that the ranking is one of 10,000 galaxies.
                table["anomaly_score"] = table["anomaly_score"] * rng.uniform(0.9, 1.1, n)
                table["rank"] = table["anomaly_score"].rank(ascending=False, method="first")
                table["rank"] = table["rank"].astype(np.int64)
            table.to_parquet(dst.product(f"{variant}/{name}.parquet"))
        umap = replicate(pd.read_parquet(src.product(f"{variant}/umap.parquet")), source_of, names)
        umap[["umap_x", "umap_y"]] += rng.normal(0, 0.3, (n, 2))
        umap.to_parquet(dst.product(f"{variant}/umap.parquet"))
        neighbours = pd.read_parquet(src.product(f"{variant}/neighbours.parquet"))
        k = int(neighbours["neighbour_rank"].max())
        rows = pd.DataFrame(
            {
                "plateifu": np.repeat(names, k),
                "neighbour_rank": np.tile(np.arange(1, k + 1), n),
                "neighbour_plateifu": np.asarray(names)[rng.integers(0, n, n * k)],
                "distance": np.sort(rng.uniform(1, 5, (n, k)), axis=1).ravel(),
            }
        )
        rows.to_parquet(dst.product(f"{variant}/neighbours.parquet"))
        shutil.copytree(src.model_dir(variant).resolve(), dst.model_dir(variant))
    for name, original in rename.items():
        cube = dst.cube(PlateIFU.parse(name))
        cube.parent.mkdir(parents=True, exist_ok=True)
        os.link(src.cube(PlateIFU.parse(original)), cube)
    return target


def timed(url: str, **params) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    response = requests.get(url, params=params, timeout=120)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"median {1000 * statistics.median(ordered):7.1f} ms  p95 {1000 * p95:7.1f} ms  "
        f"max {1000 * ordered[-1]:7.1f} ms  (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a run's data directory")
    parser.add_argument("--dir", type=Path, default=Path("explorer_bench"))
    parser.add_argument("--galaxies", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=200, help="galaxy JSON requests")
    parser.add_argument("--image-galaxies", type=int, default=10)
    args = parser.parse_args()

    from manga_assets.explorer.products import Products
    from manga_assets.explorer.server import make_server

    start = time.perf_counter()
    data_dir = fabricate(args.source, args.dir, args.galaxies)
    print(f"fabricated {args.galaxies} galaxies in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    Products(data_dir).snapshot()
    print(f"products loaded in {time.perf_counter() - start:.2f} s")

    server = make_server(data_dir, port=0, reviewer="benchmark")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://{}:{}".format(*server.server_address[:2])
    names = new_names(args.galaxies)
    rng = np.random.default_rng(1)
    timed(f"{url}/api/galaxy/{names[0]}", model="ae")  # the first request pays for imports
    pages = [timed(f"{url}/api/galaxy/{p}", model="ae")[0] for p in rng.choice(names, args.pages)]
    print(f"GET /api/galaxy/<p>        {summary(pages)}")
    listing = [timed(f"{url}/api/galaxies", model="ae")[0] for _ in range(5)]
    print(f"GET /api/galaxies (10k)    {summary(listing)}")
    queue = [timed(f"{url}/api/queue", model="ae", n=20)[0] for _ in range(5)]
    print(f"GET /api/queue?n=20        {summary(queue)}")

    # Let the server's warm-up (torch, matplotlib, the models) finish before timing images.
    server.explorer.images.reconstruction("ae", names[0], server.explorer.products.snapshot()
                                          .models["ae"].model_id)  # fmt: skip
    shutil.rmtree(data_dir / "products" / "explorer_cache", ignore_errors=True)
    per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    together = []
    chosen = rng.choice(names[1:], 2 * args.image_galaxies, replace=False)
    for plateifu in chosen[: args.image_galaxies]:
        page = requests.get(f"{url}/api/galaxy/{plateifu}", params={"model": "vae"}, timeout=60)
        for kind, image in page.json()["images"].items():
            per_kind[kind].append(timed(url + image)[0])
    for kind, times in per_kind.items():
        print(f"uncached {kind:<15}   {summary(times)}")
    with ThreadPoolExecutor(len(KINDS)) as pool:
        for plateifu in chosen[args.image_galaxies :]:
            images = requests.get(
                f"{url}/api/galaxy/{plateifu}", params={"model": "ae"}, timeout=60
            ).json()["images"]
            start = time.perf_counter()
            list(pool.map(lambda path: timed(url + path), images.values()))
            together.append(time.perf_counter() - start)
    print(f"uncached page, {len(KINDS)} images at once {summary(together)}")
    server.shutdown()


if __name__ == "__main__":
    main()
