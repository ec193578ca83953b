"""The gateway binary with the OpenSearch store (`--store opensearch`), against the session
Triton and the session OpenSearch node (fixture `opensearch_url`):

- OpenSearch unreachable at start: the gateway still serves; /health is 503 naming the store
  problem, and store-backed requests are 503 with the reason;
- a real node: photos ingested in one batch, text search returns them with true cosine
  scores (the embedded store's scores for the same photos and query), and a restarted
  gateway finds the same data;
- an existing index with another mapping version or dimension: the gateway refuses to start
  with a SchemaMismatch and leaves the index alone;
- search by face with face indexing on: the same hits, boxes and cosines as the embedded
  store (tests/test_gateway_faces.py's `face_gateway`) for the same photos and query crop;
- the node killed during a batch ingest (a node of the test's own, fixture `own_node`, so
  the session node stays up): failed items are 503 naming the store, the gateway keeps
  serving, and after the node restarts on the same data and port every acknowledged photo
  is there and searchable, re-ingesting is idempotent and /health recovers.

Gateways run as in tests/test_gateway.py (its `Gateway` class and fixtures); each test uses
its own index, deleted at the end.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
import requests
from PIL import Image

from serverctl.opensearch import OpenSearchNode
from serverctl.proc import free_port
from test_gateway import Gateway, gateway, indexed, photo_paths, read_bytes, sha256  # noqa: F401  (fixtures)
from test_gateway_faces import embed, face_gateway, face_photo, iou, jpeg, listed_faces, read  # noqa: F401  (fixture)

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


def opensearch_gateway(triton, data_dir, url: str, index: str, extra_args: tuple = (),
                       config_text: str = "") -> Gateway:
    """A gateway on the OpenSearch store at `url`, index `index` (the `store.opensearch_index`
    key, given through a config file, with `config_text` after it)."""
    config = os.path.join(data_dir, "gateway.toml")
    os.makedirs(data_dir, exist_ok=True)
    with open(config, "w") as f:
        f.write(f"[store]\nopensearch_index = {json.dumps(index)}\n{config_text}")
    return Gateway(data_dir, triton.grpc_address, extra_args=extra_args,
                   store_args=("--store", "opensearch", "--opensearch-url", url, "--config", config))


def test_unreachable_opensearch_is_not_ready_and_503(triton_with_models, tmp_path):
    port = free_port()  # nothing listens there
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
        node = {"url": opensearch_url, "out": False, "failures": 0}
        assert health["store"] == {"kind": "opensearch", "ready": True, "images": PHOTOS, "quarantined": 0,
                                   "nodes": [node]}, health

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


# search by face (the embedded-store version: tests/test_gateway_faces.py)

FACE_PHOTOS = 6


def best_face(gw, data: bytes, box=None) -> list[float]:
    """The normalised embedding /faces/embeddings gives for the photo's face at `box`
    (best IoU), or for its highest-scoring face with an embedding."""
    faces = [f for f in embed(gw, [("q.jpg", data)])["results"][0]["faces"] if f["embedding"] is not None]
    assert faces, "no face with an embedding"
    face = max(faces, key=(lambda f: iou(f["bbox"], box)) if box else (lambda f: f["score"]))
    return face["embedding"]


def boxes(items: list[dict]) -> list[float]:
    """Every item's bbox, flattened (pytest.approx compares flat lists)."""
    return [v for item in items for v in item["bbox"]]


def face_hits(gw, path: str, **kw) -> list[dict]:
    r = gw.post(path, **kw)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_search_by_face_on_opensearch_matches_the_embedded_store(triton_with_models, face_gateway, opensearch_url,
                                                                  index_name, tmp_path):
    faces = listed_faces()
    names = sorted(faces)[:FACE_PHOTOS]
    ids = {name: sha256(face_photo(name)) for name in names}
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), opensearch_url, index_name,
                                extra_args=("--index-faces", "true")).start()
    try:
        health = server.get("/health").json()
        assert health["store"]["kind"] == "opensearch" and health["faces"]["index_on_ingest"] is True, health
        files = [("image", (n, read(face_photo(n)))) for n in names]
        r = server.post("/ingest/batch", files=files)
        assert r.status_code == 200 and r.json()["created"] == FACE_PHOTOS, r.text
        # The embedded face gateway (face indexing on) gets the same photos.
        r = face_gateway.post("/ingest/batch", files=files)
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text
        for name in names:
            stored = server.get(f"/images/{ids[name]}").json()
            reference = face_gateway.get(f"/images/{ids[name]}").json()
            assert len(stored["faces"]) >= len(faces[name]), stored
            assert len(stored["faces"]) == len(reference["faces"]), (stored, reference)
            assert boxes(stored["faces"]) == pytest.approx(boxes(reference["faces"]), abs=1e-3)

        # The same photo: its best face at cosine ~1, that face's box.
        target = names[2]
        query = {"files": {"image": (target, read(face_photo(target)))}}
        top = face_hits(server, "/search/faces?k=5", **query)[0]
        assert top["image_id"] == ids[target], top
        assert top["score"] > 0.999
        best_listed = max(faces[target], key=lambda f: f[0])
        assert iou(top["bbox"], best_listed[1:]) >= 0.9, (top, best_listed)

        # A crop around one face of another photo finds that photo first, with that face's box,
        # at the cosine the embedded store gives and the one computed from the two embeddings.
        source = names[4]
        _, *box = max(faces[source], key=lambda f: f[0])
        with Image.open(face_photo(source)) as image:
            w, h = box[2] - box[0], box[3] - box[1]
            crop = jpeg(image.convert("RGB").crop((max(0, box[0] - w), max(0, box[1] - h),
                                                   min(image.width, box[2] + w), min(image.height, box[3] + h))))
        hits = face_hits(server, "/search/faces?k=5", files={"image": ("crop.jpg", crop)})
        top = hits[0]
        print(f"crop of {source}: OpenSearch top cosine {top['score']:.4f}")
        assert top["image_id"] == ids[source], hits
        assert iou(top["bbox"], box) >= 0.9, (top, box)
        assert top["width"] > 0 and top["file_url"].endswith(ids[source] + "/file"), top
        reference = face_hits(face_gateway, "/search/faces?k=5", files={"image": ("crop.jpg", crop)})
        assert [(h["image_id"], h["face_index"]) for h in hits] == [(h["image_id"], h["face_index"]) for h in reference]
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in reference], abs=1e-3)
        assert boxes(hits) == pytest.approx(boxes(reference), abs=1e-3)
        exact = sum(a * b for a, b in zip(best_face(server, crop), best_face(server, read(face_photo(source)), box)))
        assert top["score"] == pytest.approx(exact, abs=1e-3)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

        # Paging and min_score cut the same ranking.
        page = face_hits(server, "/search/faces?k=2&offset=1", files={"image": ("crop.jpg", crop)})
        assert [(h["image_id"], h["face_index"]) for h in page] == [(h["image_id"], h["face_index"]) for h in hits[1:3]]
        floor = hits[1]["score"] - 1e-4
        above = face_hits(server, f"/search/faces?k=5&min_score={floor}", files={"image": ("crop.jpg", crop)})
        assert [(h["image_id"], h["face_index"]) for h in above] == [(h["image_id"], h["face_index"]) for h in hits[:2]]

        # By embedding (JSON): a face's own vector finds its photo.
        emb = best_face(server, read(face_photo(target)))
        r = server.post("/search/faces", json={"embedding": emb, "k": 1})
        assert r.status_code == 200 and r.json()["results"][0]["image_id"] == ids[target], r.text
        assert r.json()["results"][0]["score"] > 0.999
    finally:
        server.stop()


# OpenSearch stopped during a batch ingest

OUTAGE_PHOTOS = 24
OUTAGE_CHUNK = 2  # photos per /ingest/batch request


@pytest.fixture
def own_node():
    """An OpenSearch node of this test's own, so stopping it does not disturb the session node
    the other tests share; stopped by pid (and its folder deleted) at the end."""
    node = OpenSearchNode().start()
    try:
        took = node.wait_ready(timeout=180)
        print(f"\nown OpenSearch node ready in {took:.1f}s at {node.url} (pid {node.pid})")
        yield node
    finally:
        node.stop()


def store_unavailable(error: str) -> bool:
    """A clear store error: says the store is unavailable and names OpenSearch."""
    return "store unavailable" in error and "opensearch" in error


def refused(error: str) -> bool:
    """The store error of a stopped node: refused at once, not the request timeout running out."""
    return store_unavailable(error) and ": no answer:" in error and "timed out" not in error


def test_opensearch_stopped_during_a_batch_ingest(triton_with_models, own_node, tmp_path):
    paths = photo_paths()[:OUTAGE_PHOTOS]
    ids = {p: sha256(p) for p in paths}
    chunks = [paths[i:i + OUTAGE_CHUNK] for i in range(0, len(paths), OUTAGE_CHUNK)]
    url = own_node.url
    server = opensearch_gateway(triton_with_models, str(tmp_path / "data"), url, "outage").start()
    try:
        # A client sends the chunks one after the other; the node is killed (SIGKILL by pid:
        # a crash, not a clean shutdown) while the third chunk is on its way, and the client
        # sends the rest only once the kill is done, so that some chunks surely meet a dead
        # node however fast the gateway fails them.
        answers = []  # (chunk, sent after the kill, HTTP status, body)
        third_sent, killed = threading.Event(), threading.Event()

        def client():
            for n, chunk in enumerate(chunks):
                if n == 2:
                    third_sent.set()
                elif n > 2:
                    killed.wait(timeout=120)
                after = killed.is_set()
                r = server.post("/ingest/batch", files=[("image", (os.path.basename(p), read_bytes(p))) for p in chunk])
                answers.append((n, after, r.status_code, r.json()))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        assert third_sent.wait(timeout=180) and thread.is_alive(), f"two chunks not answered in time: {answers}"
        time.sleep(0.1)  # the third chunk reaches the gateway
        assert own_node.stop(keep_data=True, kill=True) == "killed"
        killed.set()
        stopped_at = time.monotonic()

        # The gateway keeps serving, and says what is wrong: refused, not a timeout run out.
        r = server.get("/health")
        assert r.status_code == 503, (r.status_code, r.text)
        health = r.json()
        assert health["store"]["kind"] == "opensearch" and health["store"]["ready"] is False, health
        assert store_unavailable(health["store"]["error"]) and url.split("//")[1] in health["store"]["error"], health
        [node] = health["store"]["nodes"]
        assert node["url"] == url and node["out"] is True and node["failures"] >= 1, health
        assert health["triton"]["ready"] is True, "only the store is down"
        r = server.get("/search/text", params={"q": QUERY, "k": 5})
        assert r.status_code == 503 and refused(r.json()["error"]), r.text
        r = server.get(f"/images/{ids[chunks[0][0]]}")
        assert r.status_code == 503 and refused(r.json()["error"]), r.text
        r = server.post("/ingest", files={"image": ("x.jpg", read_bytes(paths[-1]))})
        assert r.status_code == 503 and refused(r.json()["error"]), r.text

        thread.join(timeout=300)
        assert not thread.is_alive(), "the batch client is still waiting on the gateway"
        assert server.proc.poll() is None, f"the gateway exited:\n{server.log_tail()}"
        print(f"outage: {sum(1 for a in answers if a[1])} of {len(chunks)} chunks sent after the kill, "
              f"client done {time.monotonic() - stopped_at:.1f}s after it")
        assert [a[0] for a in answers] == list(range(len(chunks)))
        acknowledged, failed = [], []
        for n, after, status, body in answers:
            assert status == 200, body
            for path, item in zip(chunks[n], body["results"]):
                assert item["id"] == ids[path], item
                if item["status"] == "created":
                    assert not after, f"chunk {n} was sent after the kill yet stored: {item}"
                    acknowledged.append(path)
                else:
                    assert item["status"] == "failed" and item["http_status"] == 503, item
                    assert store_unavailable(item["error"]), item
                    failed.append(path)
        assert len(acknowledged) >= 2 * OUTAGE_CHUNK and any(a[1] for a in answers), answers
        assert len(acknowledged) + len(failed) == len(paths)

        # Same data folder, same port. While it comes back (refused connections, then about
        # 2 s of HTTP 503 from OpenSearch until the shard is recovered) the gateway answers 503
        # naming the store, never a 500; then every acknowledged photo is back and searchable.
        own_node.start()
        assert own_node.url == url
        seen = {}
        deadline = time.monotonic() + 180
        probes = [f"/images/{ids[acknowledged[0]]}", f"/search/text?q={QUERY}&k=3"]
        while time.monotonic() < deadline and own_node.alive():
            answers_now = [server.get(path) for path in probes]
            for r in answers_now:
                if r.status_code != 200:
                    assert r.status_code == 503 and store_unavailable(r.json()["error"]), r.text
                    kind = "HTTP 503 from OpenSearch" if "HTTP 503" in r.text else "unreachable"
                    seen[kind] = seen.get(kind, 0) + 1
            if all(r.status_code == 200 for r in answers_now):
                break
            time.sleep(0.05)
        took = own_node.wait_ready(timeout=30)
        print(f"node restarted in {took:.1f}s; gateway answers while it came back: {seen}")
        deadline = time.monotonic() + 60
        while (r := server.get("/health")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert r.status_code == 200, f"/health did not recover: {r.text}"
        stored_now = r.json()["store"]["images"]
        # A bulk cut off by the kill may have been applied without an answer: at least the
        # acknowledged ones, at most every photo.
        assert len(acknowledged) <= stored_now <= len(paths), (stored_now, len(acknowledged))
        r = server.get("/search/text", params={"q": QUERY, "k": len(paths)})
        assert r.status_code == 200, r.text
        assert {ids[p] for p in acknowledged} <= {x["image_id"] for x in r.json()["results"]}
        for path in acknowledged:
            assert server.get(f"/images/{ids[path]}").status_code == 200
            assert server.get(f"/images/{ids[path]}/file").content == read_bytes(path)
            r = server.post("/search/similar", params={"k": 1}, files={"image": ("q.jpg", read_bytes(path))})
            assert r.status_code == 200 and r.json()["results"][0]["image_id"] == ids[path], r.text
            assert r.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)

        # Re-ingesting everything stores the rest; the acknowledged ones are already there.
        files = [("image", (os.path.basename(p), read_bytes(p))) for p in paths]
        r = server.post("/ingest/batch", files=files)
        assert r.status_code == 200, r.text
        statuses = {item["id"]: item["status"] for item in r.json()["results"]}
        assert all(statuses[ids[p]] == "already_stored" for p in acknowledged), statuses
        assert all(statuses[ids[p]] in ("created", "already_stored") for p in failed), statuses
        assert r.json()["created"] == len(paths) - stored_now and r.json()["failed"] == 0, r.text
        r = server.post("/ingest/batch", files=files)
        assert r.status_code == 200 and r.json()["already_stored"] == len(paths), r.text
        health = server.get("/health")
        assert health.status_code == 200 and health.json()["store"]["images"] == len(paths), health.text
        r = server.get("/search/text", params={"q": QUERY, "k": len(paths)})
        assert sorted(x["image_id"] for x in r.json()["results"]) == sorted(ids.values())
    finally:
        server.stop()
