"""The gateway binary with the OpenSearch store (`--store opensearch`), against the session
Triton and the session OpenSearch node (fixture `opensearch_url`):

- OpenSearch unreachable at start: the gateway still serves; /health is 503 naming the store
  problem, and store-backed requests are 503 with the reason;
- a real node: photos ingested in one batch, text search returns them with true cosine
  scores (the embedded store's scores for the same photos and query), and a restarted
  gateway finds the same data;
- an existing index with another mapping version or dimension: the gateway refuses to start
  with a SchemaMismatch and leaves the index alone.

Gateways run as in tests/test_gateway.py (its `Gateway` class and fixtures); each test uses
its own index, deleted at the end.
"""
from __future__ import annotations

import json
import os
import uuid

import pytest
import requests

import tritonctl
from test_gateway import Gateway, gateway, indexed, photo_paths, read_bytes, sha256  # noqa: F401  (fixtures)

PHOTOS = 10
QUERY = "a photo of people outside"


@pytest.fixture(scope="module")
def triton_with_models(triton, gateway):
    """The session Triton with the gateway's models loaded (the `gateway` fixture loads them,
    or skips when the binary, the models or the photos are missing)."""
    return triton


@pytest.fixture
def index_name(opensearch_url):
    """A fresh index name, deleted from the node after the test."""
    name = f"gateway-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    requests.delete(f"{opensearch_url}/{name}", timeout=30)


def opensearch_gateway(triton, data_dir, url: str, index: str) -> Gateway:
    """A gateway on the OpenSearch store at `url`, index `index` (the `store.opensearch_index`
    key, given through a config file)."""
    config = os.path.join(data_dir, "gateway.toml")
    os.makedirs(data_dir, exist_ok=True)
    with open(config, "w") as f:
        f.write(f"[store]\nopensearch_index = {json.dumps(index)}\n")
    return Gateway(data_dir, triton.grpc_address,
                   store_args=("--store", "opensearch", "--opensearch-url", url, "--config", config))


def test_unreachable_opensearch_is_not_ready_and_503(triton_with_models, tmp_path):
    port = tritonctl.free_port()  # nothing listens there
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), f"http://127.0.0.1:{port}", "unreachable")
    server.start(require_healthy=False)
    try:
        r = server.get("/health")
        assert r.status_code == 503, r.text
        health = r.json()
        assert health["status"] == "unavailable"
        store = health["store"]
        assert store["kind"] == "opensearch" and store["ready"] is False
        assert "store unavailable" in store["error"] and f"127.0.0.1:{port}" in store["error"], store["error"]
        assert health["triton"]["ready"] is True, "only the store is down"

        r = server.get("/search/text", params={"q": "a dog", "k": 5})
        assert r.status_code == 503, r.text
        assert "store unavailable" in r.json()["error"], r.text
        photo = photo_paths()[0]
        r = server.post("/ingest", files={"image": (os.path.basename(photo), read_bytes(photo))})
        assert r.status_code == 503, r.text
        assert server.get(f"/images/{sha256(photo)}").status_code == 503
        assert server.proc.poll() is None, f"the gateway exited:\n{server.log_tail()}"
    finally:
        server.stop()


def test_ingest_search_and_restart_on_a_real_node(triton_with_models, gateway, indexed, opensearch_url,
                                                  index_name, tmp_path):
    paths = photo_paths()[:PHOTOS]
    ids = [sha256(p) for p in paths]
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), opensearch_url, index_name).start()
    try:
        files = [("image", (os.path.basename(p), read_bytes(p))) for p in paths]
        r = server.post("/ingest/batch", files=files)
        assert r.status_code == 200, r.text
        assert [x["status"] for x in r.json()["results"]] == ["created"] * PHOTOS, r.text
        health = server.get("/health").json()
        assert health["store"] == {"kind": "opensearch", "ready": True, "images": PHOTOS}, health

        r = server.get("/search/text", params={"q": QUERY, "k": PHOTOS})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert sorted(x["image_id"] for x in results) == sorted(ids)
        scores = [x["score"] for x in results]
        assert scores == sorted(scores, reverse=True)
        # The embedded store computes exact cosines; the same photos and query give the same
        # scores, so OpenSearch's (1 + cos) / 2 was converted back (the photos are among the
        # session gateway's `indexed` ones).
        r = gateway.get("/search/text", params={"q": QUERY, "k": gateway.count()})
        embedded = {x["image_id"]: x["score"] for x in r.json()["results"]}
        for hit in results:
            assert hit["score"] == pytest.approx(embedded[hit["image_id"]], abs=1e-3), hit["image_id"]

        r = server.post("/search/similar", params={"k": 3}, files={"image": ("q.jpg", read_bytes(paths[3]))})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["image_id"] == ids[3]
        assert r.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)

        server.stop()
        server.start()
        assert server.count() == PHOTOS
        after = server.get("/search/text", params={"q": QUERY, "k": PHOTOS}).json()["results"]
        assert [(x["image_id"], x["score"]) for x in after] == [(x["image_id"], x["score"]) for x in results]
        for image_id in ids:
            assert server.get(f"/images/{image_id}").status_code == 200
            assert server.get(f"/images/{image_id}/file").status_code == 200
    finally:
        server.stop()


MISMATCHES = [
    ("older schema version", {"schema_version": 0, "dimension": 512}, "schema_version 0, this build writes version 1"),
    ("other dimension", {"schema_version": 1, "dimension": 256}, "256-dimensional vectors, configured for 512"),
]


@pytest.mark.parametrize("meta,reason", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_another_mapping_stops_the_start(triton_with_models, opensearch_url, index_name, tmp_path, meta, reason):
    mapping = {"_meta": meta, "properties": {"id": {"type": "keyword"}}}
    r = requests.put(f"{opensearch_url}/{index_name}", json={"mappings": mapping}, timeout=30)
    assert r.status_code == 200, r.text
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), opensearch_url, index_name)
    # The log file is shared with the session's other gateways: read what this one appends.
    log_start = os.path.getsize(server.log_path) if os.path.exists(server.log_path) else 0
    with pytest.raises(RuntimeError, match="gateway exited with 1"):
        server.start(timeout=30)
    with open(server.log_path, errors="replace") as f:
        f.seek(log_start)
        log = f.read()
    assert "store schema mismatch" in log and reason in log, log[:3000]
    stored = requests.get(f"{opensearch_url}/{index_name}/_mapping", timeout=30).json()
    assert stored[index_name]["mappings"]["_meta"] == meta, "the gateway changed the index"
