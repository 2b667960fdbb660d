"""A real dagster-webserver shows the code location, its asset graph, plates and runs."""

import dagster
import requests

from manga_assets.defs.definitions import build_definitions

GROUPS = {"acquisition", "model", "analysis", "reports", "review"}

ASSET_NODES = """
{ assetNodes { assetKey { path } groupName isPartitioned partitionKeys
    dependencyKeys { path } repository { name location { name } } } }
"""

REPOSITORIES = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes { name location { name } } } } }
"""

MATERIALISATIONS = """
query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) { __typename
    ... on Asset { assetMaterializations(limit: 100) { partition runId tags { key value }
        metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }
"""


def asset_nodes(webserver) -> dict[str, dict]:
    nodes = webserver.graphql(ASSET_NODES)["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node for node in nodes}


def materialisations(webserver, key: str) -> list[dict]:
    asset = webserver.graphql(MATERIALISATIONS, path=key.split("/"))["assetOrError"]
    return asset.get("assetMaterializations", []) if asset["__typename"] == "Asset" else []


def test_the_webserver_serves_the_code_location(webserver):
    info = requests.get(f"{webserver.url}/server_info", timeout=5).json()
    assert info["dagster_version"] == dagster.__version__
    assert info["dagster_webserver_version"] == dagster.__version__

    repositories = webserver.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    assert [r["location"]["name"] for r in repositories] == ["manga_assets"]


def test_the_asset_graph_is_the_one_the_code_defines(webserver):
    nodes = asset_nodes(webserver)
    graph = build_definitions().resolve_asset_graph()
    defined = {node.key.to_user_string(): node for node in graph.asset_nodes}
    assert set(nodes) == set(defined)
    for key, node in nodes.items():
        assert node["repository"]["location"]["name"] == "manga_assets"
        assert node["groupName"] == defined[key].group_name, key
        deps = {"/".join(d["path"]) for d in node["dependencyKeys"]}
        assert deps == {p.to_user_string() for p in defined[key].parent_keys}, key

    def deps(key):
        return {"/".join(d["path"]) for d in nodes[key]["dependencyKeys"]}

    assert deps("catalog") == set()
    assert deps("maps_files") == {"catalog"}
    assert deps("line_cubes") == {"catalog", "maps_files"}
    assert deps("training_set") == {"line_cubes"}
    assert deps("ae/model") == deps("vae/model") == {"training_set"}
    assert {"ae/latents", "vae/latents"} <= set(nodes)
    assert {"agn_sample", "ae/anomaly_scores", "vae/neighbours"} <= deps("agn_report")
    assert {node["groupName"] for node in nodes.values()} == GROUPS
    groups = {key: node["groupName"] for key, node in nodes.items()}
    assert groups["catalog"] == groups["maps_files"] == groups["line_cubes"] == "acquisition"
    assert groups["training_set"] == groups["ae/model"] == groups["vae/model"] == "model"
    assert groups["ae/umap"] == groups["agn_sample"] == "analysis"
    assert groups["agn_report"] == "reports"
    assert groups["labels"] == groups["ae/review_queue"] == groups["vae/review_queue"] == "review"


def test_the_plates_run_are_the_partitions(webserver):
    nodes = asset_nodes(webserver)
    plates = webserver.summary.plates
    assert len(plates) == 2
    for key in ("maps_files", "line_cubes", "ae/latents", "vae/latents"):
        assert nodes[key]["isPartitioned"], key
        assert nodes[key]["partitionKeys"] == plates, key
    for key in ("catalog", "training_set", "ae/model", "agn_report"):
        assert not nodes[key]["isPartitioned"] and nodes[key]["partitionKeys"] == [], key


def test_the_runs_materialisations_are_shown(webserver):
    summary = webserver.summary
    (catalog,) = materialisations(webserver, "catalog")
    assert catalog["partition"] is None and catalog["runId"] == summary.run_ids[0]
    metadata = {e["label"]: e.get("intValue") for e in catalog["metadataEntries"]}
    assert metadata["galaxies"] == summary.galaxies > 0
    assert metadata["plates"] == len(summary.plates)

    for key in ("maps_files", "line_cubes"):
        events = materialisations(webserver, key)
        # A run over several plates records each plate a second time with its own data version
        # (defs/data_versions.py): the plates' latest data versions differ.
        assert sorted({e["partition"] for e in events}) == summary.plates, key
        assert {e["runId"] for e in events} <= set(summary.run_ids[1:]), key
        latest = {}
        for event in events:  # newest first
            tags = {tag["key"]: tag["value"] for tag in event["tags"]}
            latest.setdefault(event["partition"], tags.get("dagster/data_version"))
        assert None not in latest.values() and len(set(latest.values())) == len(latest), key
    cubes = materialisations(webserver, "line_cubes")
    assert all(
        {"cubes_in_run", "cubes_by_plate"} <= {entry["label"] for entry in event["metadataEntries"]}
        for event in cubes
    )

    # The acquisition slice trained nothing: the model and the report were never materialised.
    for key in ("training_set", "ae/model", "vae/model", "agn_report"):
        assert materialisations(webserver, key) == [], key
