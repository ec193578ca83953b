"""The gateway's lifecycle through the real stack: a Triton outage under a live gateway,
DELETE on both stores, and concurrent ingests of one photo.

- Triton stopped under a running gateway (a Triton of the test's own, so the session server
  stays up): every request that needs Triton answers 503 naming Triton, /health is 503,
  nothing is stored; Triton started again on the same ports and the SAME gateway process
  serves ingest and every search again, without a restart.
- DELETE /images/{id} with face indexing on, on the embedded store and on OpenSearch: the
  photo, which every search found before, is gone from text, hybrid, similar, object and
  face search; its record and file are 404; the count drops by one; re-ingesting creates it
  again and every search finds it again.
- The same new photo sent by 8 parallel POST /ingest and 3 overlapping /ingest/batch
  requests: exactly one `created`, every other answer `already_stored`, no 5xx, the stored
  file byte-identical to the upload and no temporary file (blobs.rs writes
  `.<id>.tmp.<...>` beside the photo) left in the data dir.

Gateways run as in tests/test_gateway.py (its `Gateway` class and fixtures), OpenSearch ones
as in tests/test_gateway_opensearch.py (`opensearch_gateway`, fresh index per test).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serverctl.triton import TritonServer
from test_gateway import INDEXED, LOG_DIR, Gateway, gateway, photo_paths, read_bytes, sha256  # noqa: F401  (fixture)
from test_gateway_faces import face_photo, listed_faces, read
from test_gateway_opensearch import index_name, opensearch_gateway  # noqa: F401  (index_name: fixture)

# visual_ingest and its parts, clip_text, face_embed and its parts (docs/gateway.md).
OUTAGE_MODELS = ["preprocess", "yolo", "clip_image", "box_embed", "visual_ingest", "clip_text",
                 "face_detect", "face_encoder", "face_align", "face_embed"]


def wait_for(what: str, check, timeout: float, poll: float = 0.2):
    """Polls check() until it returns something truthy; fails naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout}s (last: {last!r})", pytrace=False)


def upload(path: str) -> dict:
    return {"files": {"image": (os.path.basename(path), read_bytes(path))}}


def batch(paths: list[str]) -> dict:
    return {"files": [("image", (os.path.basename(p), read_bytes(p))) for p in paths]}


def ids_of(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [hit["image_id"] for hit in r.json()["results"]]


# ---------------------------------------------------------------------------------------
# 1. Triton stopped and started again under a live gateway

def triton_unavailable(r) -> bool:
    """503 with the client's error: names Triton, says it is unavailable."""
    if r.status_code != 503:
        return False
    error = r.json()["error"]
    return "Triton" in error and "unavailable" in error


# `gateway` loads the models into the session Triton (whose repository this test's Triton
# shares) or skips/fails the module when the binary, models or photos are missing.
@pytest.mark.usefixtures("gateway")
def test_triton_outage_and_recovery_under_a_live_gateway(triton, tmp_path):
    faces = listed_faces()
    face_names = sorted(faces)
    stored_face, query_face = face_names[0], face_names[1]
    known = {face_photo(n) for n in face_names}
    plain = [p for p in photo_paths()[INDEXED:] if p not in known]
    before_paths = [face_photo(stored_face)] + plain[:2]
    during_single, during_batch = plain[2], plain[3:5]
    after_single, after_batch = plain[5], plain[6:8]

    server = TritonServer(triton.repo, OUTAGE_MODELS,
                                    log_path=os.path.join(LOG_DIR, f"tritonserver-outage-{os.getpid()}.log"))
    server.start()
    gw = None
    try:
        server.wait_ready(timeout=300)
        ports = (server.http_port, server.grpc_port, server.metrics_port)
        gw = Gateway(str(tmp_path / "data"), server.grpc_address, extra_args=("--index-faces", "true")).start()
        pid = gw.proc.pid
        r = gw.post("/ingest/batch", **batch(before_paths))
        assert r.status_code == 200 and r.json()["created"] == len(before_paths), r.text
        assert gw.count() == len(before_paths)
        stored_record = gw.get(f"/images/{sha256(before_paths[0])}").json()
        assert stored_record["faces"], "the stored face photo must have a face indexed"

        assert server.stop() == "stopped"
        assert not server.alive()

        # /health notices at once (no cache): 503, Triton not ready and named, the store fine.
        health = wait_for("/health answers 503 after Triton stopped",
                          lambda: (r := gw.get("/health")).status_code == 503 and r.json(), timeout=60)
        assert health["status"] == "unavailable" and health["triton"]["ready"] is False, health
        assert "Triton" in health["triton"]["error"], health
        assert health["store"] == {"kind": "embedded", "ready": True, "images": len(before_paths),
                                   "quarantined": 0}, health

        # Fresh texts and photos never seen, so no cache or stored-photo shortcut answers them.
        answers = {
            "ingest": gw.post("/ingest", **upload(during_single)),
            "text": gw.get("/search/text", params={"q": "outage: a red bicycle", "k": 3}),
            "hybrid": gw.post("/search/hybrid", json={"text": "outage: people", "classes": ["person"], "k": 3}),
            "similar": gw.post("/search/similar", params={"k": 3}, **upload(during_single)),
            "objects (text)": gw.post("/search/objects", json={"text": "outage: a dog", "k": 3}),
            "objects (image)": gw.post("/search/objects", params={"k": 3}, **upload(during_single)),
            "faces (photo)": gw.post("/search/faces", params={"k": 3}, **upload(face_photo(query_face))),
        }
        for name, r in answers.items():
            assert triton_unavailable(r), f"{name}: {r.status_code} {r.text[:300]}"
            # The client retried (max_retries 3 by default) before giving up.
            assert "after 4 attempt(s)" in r.json()["error"], f"{name}: {r.text[:300]}"
        r = gw.post("/ingest/batch", **batch(during_batch))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["created"], body["already_stored"], body["failed"]) == (0, 0, len(during_batch)), body
        for item, path in zip(body["results"], during_batch):
            assert item["id"] == sha256(path) and item["status"] == "failed" and item["http_status"] == 503, item
            assert "Triton" in item["error"] and "unavailable" in item["error"], item

        # Nothing was stored, and what needs only the store still works.
        assert gw.count() == len(before_paths)
        for path in [during_single, *during_batch]:
            assert gw.get(f"/images/{sha256(path)}").status_code == 404
            assert gw.get(f"/images/{sha256(path)}/file").status_code == 404
        assert gw.get(f"/images/{sha256(before_paths[0])}").json() == stored_record
        r = gw.post("/search/similar", params={"k": 1}, **upload(before_paths[1]))  # stored: its own query
        assert ids_of(r) == [sha256(before_paths[1])]
        r = gw.post("/search/faces", json={"embedding": [1.0] + [0.0] * 127, "k": 1})
        assert r.status_code == 200 and r.json()["count"] == 1, r.text

        # Triton again, on the same ports; the same gateway process recovers by itself.
        server.start(append_log=True)
        server.wait_ready(timeout=300)
        assert (server.http_port, server.grpc_port, server.metrics_port) == ports
        wait_for("/health 200 after Triton came back", lambda: gw.get("/health").status_code == 200, timeout=120)
        assert gw.proc.poll() is None and gw.proc.pid == pid, "the gateway was restarted"

        r = gw.post("/ingest", **upload(after_single))
        assert r.status_code == 201 and r.json()["status"] == "created", r.text
        r = gw.post("/ingest/batch", **batch(after_batch))
        assert r.status_code == 200 and r.json()["created"] == len(after_batch), r.text
        total = len(before_paths) + 1 + len(after_batch)
        assert gw.count() == total
        r = gw.post("/ingest", **upload(during_single))  # failed during the outage: now stored
        assert r.status_code == 201, r.text
        total += 1
        all_ids = {sha256(p) for p in [*before_paths, after_single, *after_batch, during_single]}
        assert set(ids_of(gw.get("/search/text", params={"q": "after: a red bicycle", "k": total}))) == all_ids
        r = gw.post("/search/hybrid", json={"text": "after: people", "k": total})
        assert set(ids_of(r)) == all_ids
        r = gw.post("/search/similar", params={"k": 1}, **upload(during_batch[0]))  # not stored: Triton embeds it
        assert len(ids_of(r)) == 1
        r = gw.post("/search/objects", json={"text": "after: a dog", "k": 3})
        assert r.status_code == 200 and r.json()["count"] >= 1, r.text
        r = gw.post("/search/objects", params={"k": 1}, **upload(during_batch[0]))
        assert r.status_code == 200 and r.json()["count"] == 1, r.text
        r = gw.post("/search/faces", params={"k": 1}, **upload(face_photo(stored_face)))
        assert ids_of(r) == [sha256(face_photo(stored_face))]
        assert r.json()["results"][0]["score"] > 0.999
    finally:
        if gw is not None:
            gw.stop()
        server.stop()
    assert not server.crash_lines(), f"{server.log_path}:\n" + "\n".join(server.crash_lines()[:20])


# ---------------------------------------------------------------------------------------
# 2. DELETE through the real stack, both stores

def store_gateway(store: str, triton, request, tmp_path, index_faces: bool = True, config_text: str = "") -> Gateway:
    """A gateway on the session Triton with a fresh store: the embedded one in tmp_path, or a
    fresh OpenSearch index (fixture `index_name`, deleted after the test); `config_text` is
    TOML for its config file."""
    data = str(tmp_path / "data")
    extra = ("--index-faces", "true") if index_faces else ()
    if store == "embedded":
        config = tmp_path / "gateway.toml"
        config.write_text(config_text)
        return Gateway(data, triton.grpc_address, extra_args=(*extra, "--config", str(config)))
    index = request.getfixturevalue("index_name")
    url = request.getfixturevalue("opensearch_url")
    return opensearch_gateway(triton, data, url, index, extra_args=extra, config_text=config_text)


def results(r) -> list[dict]:
    assert r.status_code == 200, r.text
    return r.json()["results"]


def presence(gw, path: str, record: dict, totals: dict) -> dict:
    """Whether each search finds the photo at `path` (stored record `record` while stored),
    with k large enough for every stored image, object and face."""
    image_id = sha256(path)
    data = read_bytes(path)
    k_images, k_objects, k_faces = totals["images"], totals["objects"], totals["faces"]
    obj = max(record["objects"], key=lambda o: o["confidence"])
    found = {}
    found["text"] = image_id in ids_of(gw.get("/search/text", params={"q": "a photo of a person", "k": k_images}))
    r = gw.post("/search/hybrid", json={"text": "people", "classes": [obj["class_name"]],
                                        "min_confidence": obj["confidence"] - 1e-3, "k": k_images})
    found["hybrid"] = image_id in ids_of(r)
    similar = results(gw.post("/search/similar", params={"k": k_images}, files={"image": ("q.jpg", data)}))
    found["similar"] = image_id in [h["image_id"] for h in similar]
    found["similar top"] = bool(similar) and similar[0]["image_id"] == image_id and similar[0]["score"] > 0.999
    r = gw.post("/search/objects", json={"text": "a person", "k": k_objects})
    found["objects"] = image_id in ids_of(r)
    faces = results(gw.post("/search/faces", params={"k": k_faces}, files={"image": ("q.jpg", data)}))
    found["faces"] = image_id in [h["image_id"] for h in faces]
    found["faces top"] = bool(faces) and faces[0]["image_id"] == image_id and faces[0]["score"] > 0.999
    return found


@pytest.mark.usefixtures("gateway")
@pytest.mark.parametrize("store", ["embedded", "opensearch"])
def test_delete_removes_the_photo_from_every_search_and_reingest_restores_it(store, triton, request, tmp_path):
    faces = listed_faces()
    names = sorted(faces, key=lambda n: -max(f[0] for f in faces[n]))[:5]
    paths = [face_photo(n) for n in names]
    gw = store_gateway(store, triton, request, tmp_path).start()
    try:
        r = gw.post("/ingest/batch", **batch(paths))
        assert r.status_code == 200 and r.json()["created"] == len(paths), r.text
        records = {p: gw.get(f"/images/{sha256(p)}").json() for p in paths}
        # The target: a photo with a face and a detected object, so every search can find it.
        target = next(p for p in paths if records[p]["faces"] and records[p]["objects"])
        target_id = sha256(target)
        totals = {"images": len(paths), "objects": sum(len(rec["objects"]) for rec in records.values()),
                  "faces": sum(len(rec["faces"]) for rec in records.values())}
        assert gw.count() == len(paths)

        before = presence(gw, target, records[target], totals)
        assert all(before.values()), f"the target must be found by every search before the delete: {before}"

        r = requests.delete(f"{gw.url}/images/{target_id}", timeout=60)
        assert r.status_code == 200 and r.json() == {"id": target_id, "deleted": True}, r.text
        assert gw.get(f"/images/{target_id}").status_code == 404
        assert gw.get(f"/images/{target_id}/file").status_code == 404
        assert gw.count() == len(paths) - 1
        r = requests.delete(f"{gw.url}/images/{target_id}", timeout=60)
        assert r.status_code == 404, r.text
        after = presence(gw, target, records[target], totals)
        assert not any(after.values()), f"found after the delete: {after}"
        # The other photos are untouched.
        for p in paths:
            if p != target:
                assert gw.get(f"/images/{sha256(p)}").json() == records[p]

        r = gw.post("/ingest", **upload(target))
        assert r.status_code == 201 and (r.json()["id"], r.json()["status"]) == (target_id, "created"), r.text
        assert gw.count() == len(paths)
        assert gw.get(f"/images/{target_id}/file").content == read(target)
        again = gw.get(f"/images/{target_id}").json()
        assert len(again["faces"]) == len(records[target]["faces"])
        assert len(again["objects"]) == len(records[target]["objects"])
        restored = presence(gw, target, again, totals)
        assert all(restored.values()), f"not found again after re-ingest: {restored}"
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------
# 3. The same new photo, ingested concurrently

SINGLES = 8


def temporary_files(data_dir: str) -> list[str]:
    """Files named like a temporary: blobs.rs's `.<id>.tmp.<...>`, the store's `<graph>.tmp`."""
    found = []
    for root, _, files in os.walk(data_dir):
        found += [os.path.join(root, f) for f in files if ".tmp" in f or f.startswith(".")]
    return found


@pytest.mark.usefixtures("gateway")
@pytest.mark.parametrize("store", ["embedded", "opensearch"])
def test_concurrent_ingests_of_one_photo_create_it_once(store, triton, request, tmp_path):
    photos = [p for p in photo_paths()[INDEXED + 20:] if p not in {face_photo(n) for n in listed_faces()}]
    target, others = photos[0], photos[1:4]
    target_id = sha256(target)
    batches = [[target, others[0], others[1]], [others[1], target, others[2]], [others[2], others[0], target]]
    # No face indexing: fewer Triton calls, the same race. Every racer must get in: the ingest
    # concurrency limit (8 by default, tests/test_gateway_abuse.py sheds past it) is raised.
    gw = store_gateway(store, triton, request, tmp_path, index_faces=False,
                       config_text=f"[server]\nmax_concurrent_ingest = {SINGLES + len(batches)}\n").start()
    try:
        start = threading.Barrier(SINGLES + len(batches))

        def single():
            start.wait(timeout=60)
            r = gw.post("/ingest", **upload(target))
            return r.status_code, r.json()

        def in_batch(paths):
            start.wait(timeout=60)
            r = gw.post("/ingest/batch", **batch(paths))
            return r.status_code, r.json()

        with ThreadPoolExecutor(max_workers=SINGLES + len(batches)) as pool:
            singles = [pool.submit(single) for _ in range(SINGLES)]
            batched = [pool.submit(in_batch, b) for b in batches]
            singles = [f.result(timeout=600) for f in singles]
            batched = [f.result(timeout=600) for f in batched]

        outcomes = {p: [] for p in [target, *others]}  # path -> [(HTTP status, status)]
        for status, body in singles:
            assert status in (200, 201), (status, body)
            assert body["id"] == target_id, body
            outcomes[target].append((status, body["status"]))
        for paths, (status, body) in zip(batches, batched):
            assert status == 200, (status, body)
            assert [item["id"] for item in body["results"]] == [sha256(p) for p in paths], body
            for path, item in zip(paths, body["results"]):
                outcomes[path].append((item["http_status"], item["status"]))
        for path, answers in outcomes.items():
            assert answers.count((201, "created")) == 1, (os.path.basename(path), answers)
            rest = [a for a in answers if a != (201, "created")]
            assert rest == [(200, "already_stored")] * (len(answers) - 1), (os.path.basename(path), answers)

        assert gw.count() == 1 + len(others)
        for path in [target, *others]:
            r = gw.get(f"/images/{sha256(path)}/file")
            assert r.status_code == 200 and r.content == read_bytes(path), os.path.basename(path)
        assert temporary_files(gw.data_dir) == []
        r = gw.post("/search/similar", params={"k": 1 + len(others)}, **upload(target))
        assert ids_of(r).count(target_id) == 1 and ids_of(r)[0] == target_id
    finally:
        gw.stop()
    assert temporary_files(gw.data_dir) == [], "a temporary file was left after the gateway stopped"
