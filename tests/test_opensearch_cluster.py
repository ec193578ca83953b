"""The gateway binary on a three-node OpenSearch cluster (fixture `opensearch_cluster`: the
cluster scripts/test.sh started, or one of the session's own), given all three node URLs,
against the session Triton, with a node killed by pid (SIGKILL: a crash):

- during a batch ingest into an index of 2 shards with 1 replica: every acknowledged photo
  is found afterwards (by the gateway's searches, and on each surviving node by `_count` and
  an ids query), no photo is stored twice (ids are content hashes), ingest and search keep
  answering while the cluster is yellow; the node restarts on its data, the cluster goes
  green within a bounded wait and nothing is lost;
- the node listed first (the cluster manager, so an election happens too): every search
  after the kill answers 200 within a bounded time, answered by the other nodes (their REST
  counters in `_nodes/usage`), and the gateway sends requests to the node again once it is
  back.

Each test uses its own index, deleted at the end, and leaves the cluster green with every
node running (fixture `cluster`).
"""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import requests

from test_gateway import gateway, photo_paths, read_bytes, sha256  # noqa: F401  (fixture)
from test_gateway_opensearch import opensearch_gateway, store_unavailable, triton_with_models  # noqa: F401  (fixture)

KILL_PHOTOS = 24
KILL_CHUNK = 2  # photos per /ingest/batch request
MOVE_PHOTOS = 6
MOVE_SEARCHES = 30
QUERY = "a photo of people outside"
# A search or single ingest answered later than this while a node is down counts as not
# answering (measured: see docs/opensearch.md, "A cluster of three nodes").
ANSWER_BOUND_S = 10.0
# Restarting a node and recovering its shard copies (measured 20-40 s on 2 cores).
RECOVERY_BOUND_S = 180.0
# The gateway probes a node taken out after 1 s, doubling the pause up to 32 s
# (docs/opensearch.md, "Several nodes"): back in use within about 32 s of answering.
PROBE_BOUND_S = 60.0


def node_get(url: str, path: str, **params):
    r = requests.get(f"{url}{path}", params=params, timeout=30)
    assert r.status_code == 200, f"GET {url}{path}: {r.status_code} {r.text[:500]}"
    return r.json()


def cluster_manager(cluster) -> int:
    """Index in the cluster of the elected cluster manager."""
    url = cluster.running()[0].url
    return cluster.index_of(node_get(url, "/_cat/cluster_manager", format="json")[0]["node"])


def shard_copies(cluster, index: str) -> list[dict]:
    """`_cat/shards` of the index: shard, prirep (p/r), state, node and docs of every copy."""
    return node_get(cluster.running()[0].url, f"/_cat/shards/{index}", format="json")


def rest_searches(cluster, i: int) -> int:
    """`_search` requests node i has received over REST since it started (`_nodes/usage`):
    only the gateway searches during the tests; internal shard searches are not REST calls."""
    usage = node_get(cluster.urls[i], "/_nodes/_local/usage")["nodes"]
    (node,) = usage.values()
    return node["rest_actions"].get("search_action", 0)


def stored_ids(url: str, index: str, expected: set[str]) -> list[str]:
    """The `_id` of every document in the index as node `url` finds it, after checking that
    each document's `id` field is its `_id` and that `_count` agrees with the hits."""
    count = node_get(url, f"/{index}/_count")["count"]
    r = requests.post(f"{url}/{index}/_search", timeout=30,
                      json={"size": count + 10, "query": {"match_all": {}}, "_source": ["id"],
                            "track_total_hits": True})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits["total"]["value"] == count == len(hits["hits"]), (url, count, hits["total"])
    for hit in hits["hits"]:
        assert hit["_source"]["id"] == hit["_id"], hit
    by_ids = requests.post(f"{url}/{index}/_search", timeout=30,
                           json={"size": len(expected) + 10, "query": {"ids": {"values": sorted(expected)}},
                                 "_source": False})
    assert by_ids.status_code == 200, by_ids.text
    assert {h["_id"] for h in by_ids.json()["hits"]["hits"]} == expected, f"{url}: an id query misses photos"
    return [hit["_id"] for hit in hits["hits"]]


def assert_taken_out(health: dict, dead: str, alive: list[str]) -> None:
    """The gateway's /health: the store ready, the node at `dead` out of its pool after a
    failed connection (its address in the error), the nodes at `alive` in service."""
    store = health["store"]
    assert store["ready"] is True, health
    pool = {node["url"]: node for node in store["nodes"]}
    assert set(pool) == {dead, *alive}, pool
    assert pool[dead]["out"] and pool[dead]["failures"] >= 1, pool
    assert dead.split("//")[1] in pool[dead]["last_error"], pool
    assert not any(pool[url]["out"] for url in alive), pool


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture
def cluster(opensearch_cluster):
    """The session cluster; afterwards every killed node runs again and the cluster is green."""
    yield opensearch_cluster
    for i, node in enumerate(opensearch_cluster.nodes):
        if not node.alive():
            opensearch_cluster.restart(i, timeout=RECOVERY_BOUND_S)
    opensearch_cluster.wait_status("green", timeout=RECOVERY_BOUND_S)


@pytest.fixture
def cluster_index(cluster):
    """A fresh index name, deleted from the cluster after the test."""
    name = f"cluster-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    requests.delete(f"{cluster.running()[0].url}/{name}", timeout=30)


def ingest_chunk(server, paths: list[str]):
    return server.post("/ingest/batch", files=[("image", (os.path.basename(p), read_bytes(p))) for p in paths])


def test_node_killed_during_a_batch_ingest_loses_nothing(triton_with_models, cluster, cluster_index, tmp_path):
    paths = photo_paths()[:KILL_PHOTOS]
    extra = photo_paths()[KILL_PHOTOS]  # ingested on its own while the cluster is yellow
    ids = {p: sha256(p) for p in paths + [extra]}
    chunks = [paths[i:i + KILL_CHUNK] for i in range(0, len(paths), KILL_CHUNK)]
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), ",".join(cluster.urls),
                                cluster_index).start()
    try:
        # The first chunk creates the index, with the store's default layout.
        r = ingest_chunk(server, chunks[0])
        assert r.status_code == 200 and r.json()["created"] == KILL_CHUNK, r.text
        settings = node_get(cluster.urls[0], f"/{cluster_index}/_settings", flat_settings="true")
        settings = settings[cluster_index]["settings"]
        assert (settings["index.number_of_shards"], settings["index.number_of_replicas"]) == ("2", "1"), settings
        # The default 1 min before a missing node's replicas are rebuilt elsewhere could end
        # the yellow phase on a slow machine; with 10 min they wait for the node to return.
        r = requests.put(f"{cluster.urls[0]}/{cluster_index}/_settings", timeout=30,
                         json={"index.unassigned.node_left.delayed_timeout": "10m"})
        assert r.status_code == 200, r.text
        cluster.wait_status("green", timeout=60)
        # A node holding a primary, so a replica must be promoted; not the cluster manager
        # when another one holds a primary (the other test kills the manager).
        holders = {cluster.index_of(c["node"]) for c in shard_copies(cluster, cluster_index) if c["prirep"] == "p"}
        manager = cluster_manager(cluster)
        victim = min(holders - {manager} or holders)
        survivors = [i for i in range(len(cluster.nodes)) if i != victim]

        # A client sends the other chunks one after the other; the node is killed while the
        # third one is on its way, and the client sends the rest only once the kill is done.
        answers = []  # (chunk, sent after the kill, HTTP status, body)
        third_sent, killed = threading.Event(), threading.Event()

        def client():
            for n, chunk in enumerate(chunks[1:], start=1):
                if n == 2:
                    third_sent.set()
                elif n > 2:
                    killed.wait(timeout=120)
                after = killed.is_set()
                try:
                    r = ingest_chunk(server, chunk)
                except requests.RequestException as e:  # the gateway gone: the test has failed already
                    answers.append((n, after, None, str(e)))
                    return
                answers.append((n, after, r.status_code, r.json()))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        assert third_sent.wait(timeout=180) and thread.is_alive(), f"two chunks not answered in time: {answers}"
        time.sleep(0.1)  # the third chunk reaches the gateway
        assert cluster.kill(victim) == "killed"
        killed.set()
        to_yellow = cluster.wait_status("yellow", timeout=60)

        # While the cluster is yellow, with the chunks still arriving: search, read and a
        # single ingest answer 200 within the bound.
        yellow = []
        for name, call, status in [
            ("text search", lambda: server.get("/search/text", params={"q": QUERY, "k": 5}), 200),
            ("record", lambda: server.get(f"/images/{ids[chunks[0][0]]}"), 200),
            ("similar search", lambda: server.post("/search/similar", params={"k": 1},
                                                   files={"image": ("q.jpg", read_bytes(chunks[0][1]))}), 200),
            ("ingest", lambda: server.post("/ingest", files={"image": ("x.jpg", read_bytes(extra))}), 201),
            ("health", lambda: server.get("/health"), 200),
        ]:
            r, took = timed(call)
            assert r.status_code == status, f"{name} while yellow: {r.status_code} {r.text}"
            yellow.append((name, round(took, 2)))
        assert max(took for _, took in yellow) < ANSWER_BOUND_S, yellow
        assert_taken_out(server.get("/health").json(), cluster.urls[victim], [cluster.urls[i] for i in survivors])
        r = server.post("/ingest", files={"image": ("x.jpg", read_bytes(extra))})
        assert r.json()["status"] == "already_stored", r.text

        thread.join(timeout=300)
        assert not thread.is_alive(), "the batch client is still waiting on the gateway"
        health = cluster.health()
        assert (health["status"], health["number_of_nodes"]) == ("yellow", 2), f"no longer yellow: {health}"
        assert [a[0] for a in answers] == list(range(1, len(chunks)))
        acknowledged = set(chunks[0]) | {extra}
        failed = set()
        for n, _, status, body in answers:
            assert status == 200, body
            for path, item in zip(chunks[n], body["results"]):
                assert item["id"] == ids[path], item
                if item["status"] in ("created", "already_stored"):
                    acknowledged.add(path)
                else:
                    # Only a chunk caught by the kill may fail, and then as the store being unavailable.
                    assert item["status"] == "failed" and item["http_status"] == 503, item
                    assert store_unavailable(item["error"]), item
                    failed.add(path)
        assert any(after for _, after, _, _ in answers), "no chunk was sent after the kill"
        print(f"victim {cluster.nodes[victim].node_name} (manager {cluster.nodes[manager].node_name}); yellow "
              f"{to_yellow:.1f}s after the kill; answers while yellow {yellow}; "
              f"{len(acknowledged)} acknowledged, {len(failed)} failed")

        # Every acknowledged photo is on each surviving node, each photo once.
        acked_ids = {ids[p] for p in acknowledged}
        seen = []
        for i in survivors:
            found = stored_ids(cluster.urls[i], cluster_index, acked_ids)
            assert len(found) == len(set(found)), "a photo is stored twice"
            assert acked_ids <= set(found) <= set(ids.values()), (cluster.nodes[i].node_name, found)
            seen.append(set(found))
        stored = seen[0]
        assert all(found == stored for found in seen), "the surviving nodes disagree"
        r = server.get("/search/text", params={"q": QUERY, "k": len(ids)})
        assert r.status_code == 200, r.text
        hits = [x["image_id"] for x in r.json()["results"]]
        assert len(hits) == len(set(hits)) and set(hits) == stored, "text search: every stored photo, once"
        for path in acknowledged:
            r = server.post("/search/similar", params={"k": 1}, files={"image": ("q.jpg", read_bytes(path))})
            assert r.status_code == 200 and r.json()["results"][0]["image_id"] == ids[path], r.text
            assert r.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)

        # The node returns on its data: green within the bound, and nothing lost or doubled.
        rejoined = cluster.restart(victim, timeout=RECOVERY_BOUND_S)
        green = cluster.wait_status("green", timeout=RECOVERY_BOUND_S)
        print(f"{cluster.nodes[victim].node_name} rejoined in {rejoined:.1f}s, green {green:.1f}s later")
        for i in range(len(cluster.nodes)):
            assert set(stored_ids(cluster.urls[i], cluster_index, acked_ids)) == stored, cluster.nodes[i].node_name
        requests.post(f"{cluster.urls[0]}/{cluster_index}/_refresh", timeout=30)
        copies = shard_copies(cluster, cluster_index)
        assert len(copies) == 4 and all(c["state"] == "STARTED" for c in copies), copies
        for shard in ("0", "1"):
            assert len({c["docs"] for c in copies if c["shard"] == shard}) == 1, f"copies of shard {shard} differ"
        health = server.get("/health")
        assert health.status_code == 200 and health.json()["store"]["images"] == len(stored), health.text

        # Re-ingesting everything stores what failed; nothing is stored twice.
        r = ingest_chunk(server, paths)
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text
        statuses = {item["id"]: item["status"] for item in r.json()["results"]}
        assert all(statuses[ids[p]] == "already_stored" for p in acknowledged if p != extra), statuses
        for i in range(len(cluster.nodes)):
            assert sorted(stored_ids(cluster.urls[i], cluster_index, set(ids.values()))) == sorted(ids.values())
    finally:
        server.stop()


def test_requests_move_off_the_killed_node(triton_with_models, cluster, cluster_index, tmp_path):
    paths = photo_paths()[:MOVE_PHOTOS]
    ids = {sha256(p) for p in paths}
    # The gateway lists the cluster manager first: killing it takes away the node the
    # gateway's rounds start at, and forces an election at the same time.
    manager = cluster_manager(cluster)
    others = [i for i in range(len(cluster.nodes)) if i != manager]
    urls = [cluster.urls[i] for i in [manager] + others]
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), ",".join(urls), cluster_index).start()

    def search():
        r, took = timed(lambda: server.get("/search/text", params={"q": QUERY, "k": len(ids) + 1}))
        assert r.status_code == 200, r.text
        assert {x["image_id"] for x in r.json()["results"]} == ids, r.text
        return took

    try:
        r = ingest_chunk(server, paths)
        assert r.status_code == 200 and r.json()["created"] == MOVE_PHOTOS, r.text
        cluster.wait_status("green", timeout=60)
        # The gateway talks to every node, the first listed included.
        before = [rest_searches(cluster, i) for i in range(len(cluster.nodes))]
        for _ in range(3 * len(cluster.nodes)):
            search()
        spread = [rest_searches(cluster, i) - before[i] for i in range(len(cluster.nodes))]
        assert all(n >= 1 for n in spread), f"searches per node before the kill: {spread}"

        before = {i: rest_searches(cluster, i) for i in others}
        assert cluster.kill(manager) == "killed"
        latencies = [search() for _ in range(MOVE_SEARCHES)]
        extra = photo_paths()[-1]
        r, took = timed(lambda: server.post("/ingest", files={"image": ("x.jpg", read_bytes(extra))}))
        assert r.status_code == 201 and r.json()["status"] == "created", r.text
        ids.add(sha256(extra))
        moved = {cluster.nodes[i].node_name: rest_searches(cluster, i) - before[i] for i in others}
        print(f"after killing {cluster.nodes[manager].node_name} (listed first, cluster manager): "
              f"{MOVE_SEARCHES} searches, slowest {max(latencies):.2f}s, first {latencies[0]:.2f}s; "
              f"ingest {took:.2f}s; searches per surviving node {moved}")
        assert max(latencies + [took]) < ANSWER_BOUND_S, latencies
        assert sum(moved.values()) >= MOVE_SEARCHES, moved
        health = server.get("/health")
        assert health.status_code == 200, health.text
        assert_taken_out(health.json(), urls[0], urls[1:])

        # Back on its data: the gateway's probe puts it back and sends it requests again.
        cluster.restart(manager, timeout=RECOVERY_BOUND_S)
        cluster.wait_status("green", timeout=RECOVERY_BOUND_S)
        back = time.monotonic()
        while rest_searches(cluster, manager) == 0:
            assert time.monotonic() < back + PROBE_BOUND_S, "the gateway never sent a request to the restarted node"
            search()
            time.sleep(0.2)
        nodes = server.get("/health").json()["store"]["nodes"]
        assert not any(node["out"] for node in nodes), nodes
        print(f"the gateway sent the restarted node requests again {time.monotonic() - back:.1f}s after it was green")
    finally:
        server.stop()

