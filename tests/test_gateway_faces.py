"""End-to-end tests of the gateway's face endpoints against the session's real tritonserver.

Reuses tests/test_gateway.py: its `gateway` fixture (face indexing off, native rerank) for
POST /faces/embeddings and /faces/rerank, and its `Gateway` class for two more processes:
one with face indexing on (search by face) and one with the rerank plugin
(librerank_plugin.so beside the gateway binary). Expected faces:
../shared/data/faces/coco_faces_scrfd500m.json (score, x1, y1, x2, y2 per face; SCRFD-500M,
score >= 0.6), the same list tests/test_faces.py checks the Triton models against.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from kserve_http import infer
from serverctl.proc import free_port
from test_gateway import COCO_IMAGES, GATEWAY_BIN, SHARED, TOKENIZER_DIR, Gateway, gateway, sha256  # noqa: F401  (fixture)

FACE_LIST = os.path.join(SHARED, "data", "faces", "coco_faces_scrfd500m.json")
PLUGIN_SO = os.path.join(os.path.dirname(GATEWAY_BIN), "librerank_plugin.so")
MAX_IMAGES = 16  # faces.max_images_per_request default


def listed_faces() -> dict:
    with open(FACE_LIST) as f:
        return json.load(f)


def face_photo(name: str) -> str:
    return os.path.join(COCO_IMAGES, name)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def triton_calls(gw, model: str) -> float:
    text = gw.get("/metrics").text
    m = re.search(r'gateway_triton_request_duration_seconds_count\{model="' + model + r'"\} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def embed(gw, files: list[tuple[str, bytes]], **fields):
    r = gw.post("/faces/embeddings", files=[("image", (name, data)) for name, data in files], data=fields)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def face_gateway(gateway, triton, tmp_path_factory):
    """A second gateway that stores each photo's faces on ingest."""
    server = Gateway(str(tmp_path_factory.mktemp("face-gateway-data")), triton.grpc_address,
                     extra_args=("--index-faces", "true")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plugin_gateway(gateway, triton, tmp_path_factory):
    if not os.path.exists(PLUGIN_SO):
        pytest.fail(f"{PLUGIN_SO} is missing: cargo build -p rerank-plugin (same profile as the gateway)",
                    pytrace=False)
    server = Gateway(str(tmp_path_factory.mktemp("plugin-gateway-data")), triton.grpc_address,
                     extra_args=("--rerank-library", PLUGIN_SO)).start()
    yield server
    server.stop()


# /faces/embeddings

def test_embeddings_find_the_listed_faces(gateway):
    faces = listed_faces()
    names = sorted(faces)
    found = 0
    for start in range(0, len(names), MAX_IMAGES):
        chunk = names[start:start + MAX_IMAGES]
        body = embed(gateway, [(name, read(face_photo(name))) for name in chunk])
        assert [r["name"] for r in body["results"]] == chunk
        for name, result in zip(chunk, body["results"]):
            assert result["status"] == "ok", result
            got = result["faces"]
            assert [f["score"] for f in got] == sorted((f["score"] for f in got), reverse=True), name
            for face in got:
                assert len(face["embedding"]) == body["embedding_dim"] == 128
                assert abs(math.sqrt(sum(v * v for v in face["embedding"])) - 1.0) < 1e-4
                assert len(face["landmarks"]) == 5
                x1, y1, x2, y2 = face["bbox"]
                assert all(x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1 for x, y in face["landmarks"]), face
            for score, *box in faces[name]:
                best = max(got, key=lambda f: iou(f["bbox"], box), default=None)
                assert best is not None and iou(best["bbox"], box) >= 0.9, f"{name}: no face at {box}: {got}"
                assert abs(best["score"] - score) <= 0.01, f"{name}: score {best['score']} vs listed {score}"
                found += 1
    assert found == sum(len(v) for v in faces.values())


def test_corrupt_photo_gets_its_own_error_and_duplicates_are_analysed_once(gateway):
    crowd = max(listed_faces().items(), key=lambda kv: len(kv[1]))[0]
    good = read(face_photo(crowd))
    blank = jpeg(Image.new("RGB", (320, 240), (128, 128, 128)))
    corrupt = good[: len(good) // 3]
    before = triton_calls(gateway, "face_embed")
    body = embed(gateway, [("crowd.jpg", good), ("broken.jpg", corrupt), ("blank.jpg", blank), ("again.jpg", good),
                           ("text.jpg", b"this is not an image")])
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["ok", "failed", "ok", "ok", "failed"], body
    crowd_result, broken, no_faces, again, text = body["results"]
    assert len(crowd_result["faces"]) >= len(listed_faces()[crowd])
    assert broken["http_status"] == 422 and broken["error"], broken
    assert text["http_status"] == 422 and "image" in text["error"].lower(), text
    assert no_faces["faces"] == []
    assert again["duplicate_of"] == 0 and again["faces"] == crowd_result["faces"]
    assert again["image_id"] == crowd_result["image_id"] == sha256(face_photo(crowd))
    assert body["analyzed"] == 4 and body["failed"] == 2
    assert triton_calls(gateway, "face_embed") - before == 4, "the duplicate must not reach Triton"


def test_json_base64_equals_multipart_and_options(gateway):
    name = sorted(listed_faces())[0]
    data = read(face_photo(name))
    multipart = embed(gateway, [(name, data)], raw_boxes="true")
    r = gateway.post("/faces/embeddings", json={"images": [{"name": name, "data": base64.b64encode(data).decode()}],
                                                "options": {"raw_boxes": True}})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["faces"] == multipart["results"][0]["faces"]
    for face in multipart["results"][0]["faces"]:
        assert face["detector_bbox"] == pytest.approx(face["bbox"], abs=1e-3)  # photos <= 1920 px: same frame
    assert all("aligned_face_png" not in face for face in multipart["results"][0]["faces"])
    # raw_embeddings: the encoder's output before the gateway's normalisation, same direction
    raw = embed(gateway, [(name, data)], raw_boxes="true", raw_embeddings="true")["results"][0]["faces"]
    assert len(raw) == len(multipart["results"][0]["faces"]) > 0
    for raw_face, face in zip(raw, multipart["results"][0]["faces"]):
        if face["embedding"] is None:  # rejected landmarks
            assert raw_face["embedding"] is None
            continue
        norm = math.sqrt(sum(v * v for v in raw_face["embedding"]))
        assert norm > 2, f"raw embedding has norm {norm}"
        assert [v / norm for v in raw_face["embedding"]] == pytest.approx(face["embedding"], abs=1e-6)
    too_many = [("image", (f"{i}.jpg", data)) for i in range(MAX_IMAGES + 1)]
    r = gateway.post("/faces/embeddings", files=too_many)
    assert r.status_code == 400 and "limit" in r.json()["error"], r.text


def test_aligned_faces_are_what_face_encoder_embedded(gateway, triton):
    """aligned_faces: each face's PNG, normalised as face_align normalises, through the real
    face_encoder gives the embedding the gateway returned for that face. The listed photos
    (<= 640 px) plus one upscaled past preprocess's 1920 px cap, where the crop comes from
    the capped `original`."""
    faces = listed_faces()
    names = sorted(faces)
    with Image.open(face_photo(names[0])) as image:
        big = jpeg(image.convert("RGB").resize((image.width * 4, image.height * 4), Image.BICUBIC))
    uploads = [(name, read(face_photo(name))) for name in names] + [("big.jpg", big)]
    crops, embeddings, rejected = [], [], 0
    for start in range(0, len(uploads), MAX_IMAGES):
        body = embed(gateway, uploads[start:start + MAX_IMAGES], aligned_faces="true", raw_boxes="true")
        for result in body["results"]:
            assert result["status"] == "ok", result
            for face in result["faces"]:
                if face["embedding"] is None:
                    assert face["aligned_face_png"] is None, face
                    rejected += 1
                    continue
                with Image.open(io.BytesIO(base64.b64decode(face["aligned_face_png"]))) as png:
                    assert (png.format, png.mode, png.size) == ("PNG", "RGB", (112, 112))
                    crops.append(np.asarray(png))
                embeddings.append(face["embedding"])
    assert len(crops) >= sum(len(v) for v in faces.values()) + len(faces[names[0]])
    batch = ((np.stack(crops).astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    encoded = []
    for start in range(0, len(batch), 32):  # face_encoder's max_batch_size
        r = infer(triton.http_url, "face_encoder", {"faces": batch[start:start + 32]}, ["embeddings"])
        assert r.ok, r.error
        encoded.append(r.outputs["embeddings"])
    encoded = np.concatenate(encoded)
    encoded /= np.linalg.norm(encoded, axis=1, keepdims=True)
    cos = np.sum(encoded * np.asarray(embeddings, np.float32), axis=1)
    print(f"aligned_faces: {len(cos)} faces ({rejected} rejected, no PNG), min cosine {cos.min():.6f}")
    assert cos.min() >= 0.999, cos


# /faces/rerank

RERANK = {
    "query": [1.0, 0.0, 0.0],
    "candidates": [
        {"id": "opposite", "embedding": [-2.0, 0.0, 0.0]},
        {"id": "same", "embedding": [3.0, 0.0, 0.0]},
        {"id": "diagonal", "embedding": [1.0, 1.0, 0.0]},
        {"id": "orthogonal", "embedding": [0.0, 0.0, 5.0]},
    ],
}


def test_rerank_sorts_by_half_one_plus_cosine_and_applies_the_threshold(gateway):
    r = gateway.post("/faces/rerank", json={**RERANK, "threshold": 0.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["id"] for h in body["results"]] == ["same", "diagonal", "orthogonal"]
    assert [h["score"] for h in body["results"]] == pytest.approx([1.0, (1 + math.sqrt(0.5)) / 2, 0.5], abs=1e-6)
    d = body["diagnostics"]
    assert (d["scorer"], d["candidates"], d["returned"], d["dim"]) == ("native", 4, 3, 3)
    assert d["threshold"] == pytest.approx(0.5) and d["latency_ms"] >= 0
    # Without an override the configured default (0.7) applies.
    r = gateway.post("/faces/rerank", json=RERANK)
    assert [h["id"] for h in r.json()["results"]] == ["same", "diagonal"]
    assert r.json()["diagnostics"]["threshold"] == pytest.approx(0.7)


@pytest.mark.parametrize("body, needle", [
    ({"query": [1.0, 0.0], "candidates": [{"id": "a", "embedding": [1.0, 0.0, 0.0]}]}, "dimensions"),
    ({"query": [1.0, 0.0], "candidates": []}, "empty"),
    ({"query": [], "candidates": [{"id": "a", "embedding": [1.0]}]}, "empty"),
    ({"query": [1.0], "candidates": [{"id": str(i), "embedding": [1.0]} for i in range(10_001)]}, "limit"),
    ({"query": [1.0, 0.0], "candidates": [{"id": "a", "embedding": [0.0, 0.0]}]}, "zeros"),
    ({"query": [1.0], "candidates": [{"id": "a", "embedding": [1.0]}], "threshold": -0.1}, "threshold"),
])
def test_rerank_bad_input_is_400(gateway, body, needle):
    r = gateway.post("/faces/rerank", json=body)
    assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_rerank_nan_is_400(gateway):
    r = gateway.post("/faces/rerank",
                     data='{"query": [NaN, 1.0], "candidates": [{"id": "a", "embedding": [1.0, 0.0]}]}',
                     headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text


def test_plugin_scorer_gives_the_native_results(gateway, plugin_gateway):
    health = plugin_gateway.get("/health").json()
    assert health["faces"]["rerank_scorer"] == f"plugin:{PLUGIN_SO}"
    assert gateway.get("/health").json()["faces"]["rerank_scorer"] == "native"
    rows = [[math.sin(i * 0.7 + j) for j in range(128)] for i in range(500)]
    body = {"query": [math.cos(j * 0.3) for j in range(128)], "threshold": 0.0,
            "candidates": [{"id": f"c{i}", "embedding": row} for i, row in enumerate(rows)]}
    native = gateway.post("/faces/rerank", json=body).json()
    plugin = plugin_gateway.post("/faces/rerank", json=body).json()
    assert plugin["diagnostics"]["scorer"].startswith("plugin:")
    assert plugin["results"] == native["results"] and len(native["results"]) == 500
    metrics = plugin_gateway.get("/metrics").text
    assert 'gateway_rerank_requests_total{outcome="ok",scorer="plugin"} 1' in metrics, metrics


def test_a_bad_rerank_library_stops_the_start(triton, gateway, tmp_path):
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    for library, reason in [(tmp_path / "nope.so", "cannot load the rerank library"),
                            ("libc.so.6", 'has no symbol "rerank_abi_version"')]:
        result = subprocess.run(
            [GATEWAY_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--triton", f"http://{triton.grpc_address}",
             "--data-dir", str(tmp_path / "data"), "--tokenizer-dir", TOKENIZER_DIR, "--rerank-library", str(library)],
            capture_output=True, text=True, timeout=60, env=env)
        assert result.returncode != 0, result.stdout
        assert reason in result.stderr and str(library) in result.stderr, result.stderr
        assert "listening" not in result.stdout, "the gateway must refuse before it listens"


# search by face

def test_search_by_face_finds_the_photo_and_its_face(face_gateway):
    health = face_gateway.get("/health").json()
    assert health["faces"]["index_on_ingest"] is True
    models = {m["name"]: m for m in health["triton"]["models"]}
    for name in ("face_embed", "face_detect", "face_align", "face_encoder"):
        assert models[name]["ready"] and models[name]["required"], health
    faces = listed_faces()
    names = sorted(faces)[:6]
    r = face_gateway.post("/ingest/batch", files=[("image", (n, read(face_photo(n)))) for n in names])
    assert r.status_code == 200 and r.json()["created"] == len(names), r.text
    for name in names:
        record = face_gateway.get(f"/images/{sha256(face_photo(name))}").json()
        assert len(record["faces"]) >= len(faces[name]), record

    # The same photo: its best face is stored too, at cosine ~1.
    target = names[2]
    r = face_gateway.post("/search/faces?k=5", files={"image": (target, read(face_photo(target)))})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["image_id"] == sha256(face_photo(target)), r.json()
    assert top["score"] > 0.999
    best_listed = max(faces[target], key=lambda f: f[0])
    assert iou(top["bbox"], best_listed[1:]) >= 0.9, (top, best_listed)

    # A crop around one face of another photo finds that photo first, with that face's box.
    source = names[4]
    _, *box = max(faces[source], key=lambda f: f[0])
    with Image.open(face_photo(source)) as image:
        w, h = box[2] - box[0], box[3] - box[1]
        crop = image.convert("RGB").crop((max(0, box[0] - w), max(0, box[1] - h), min(image.width, box[2] + w),
                                          min(image.height, box[3] + h)))
    r = face_gateway.post("/search/faces?k=3", files={"image": ("crop.jpg", jpeg(crop))})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    print(f"crop of {source}: top cosine {top['score']:.3f}")
    assert top["image_id"] == sha256(face_photo(source)), r.json()
    assert iou(top["bbox"], box) >= 0.9, (top, box)

    # By embedding: a face's own vector from /faces/embeddings.
    emb = embed(face_gateway, [(target, read(face_photo(target)))])["results"][0]["faces"][0]["embedding"]
    r = face_gateway.post("/search/faces", json={"embedding": emb, "k": 1})
    assert r.status_code == 200 and r.json()["results"][0]["image_id"] == sha256(face_photo(target)), r.text
    r = face_gateway.post("/search/faces", json={"embedding": emb[:10]})
    assert r.status_code == 400 and "embedding_dim" in r.json()["error"], r.text
    blank = jpeg(Image.new("RGB", (200, 200), (90, 90, 90)))
    r = face_gateway.post("/search/faces", files={"image": ("blank.jpg", blank)})
    assert r.status_code == 422 and "no face" in r.json()["error"], r.text
    assert 'gateway_faces_detected_total' in face_gateway.get("/metrics").text


def test_more_like_a_stored_face_equals_brute_force(face_gateway):
    """GET /images/{id}/faces/{i}/similar searches from the stored face vector: that face
    first at cosine 1, then every stored face ranked by its cosine, the reference being
    /faces/embeddings of the same photos (stored faces matched to them by box)."""
    names = sorted(listed_faces())[:6]
    files = [("image", (n, read(face_photo(n)))) for n in names]
    r = face_gateway.post("/ingest/batch", files=files)
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    analysed = embed(face_gateway, [(n, read(face_photo(n))) for n in names])["results"]
    vectors = {}
    for name, result in zip(names, analysed):
        image_id = sha256(face_photo(name))
        record = face_gateway.get(f"/images/{image_id}").json()
        for face in record["faces"]:
            [match] = [f for f in result["faces"] if np.allclose(f["bbox"], face["bbox"], atol=1e-3)]
            vectors[(image_id, face["index"])] = np.asarray(match["embedding"], np.float64)
    assert len(vectors) >= len(names), vectors.keys()
    image_id, index = sorted(vectors)[len(vectors) // 2]
    expected = {key: float(v @ vectors[(image_id, index)]) for key, v in vectors.items()}
    r = face_gateway.get(f"/images/{image_id}/faces/{index}/similar", params={"k": len(vectors)})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert len(hits) == len(vectors)
    assert (hits[0]["image_id"], hits[0]["face_index"]) == (image_id, index) and hits[0]["score"] > 0.9999, hits[0]
    ranked = sorted(expected.values(), reverse=True)
    keys = [(h["image_id"], h["face_index"]) for h in hits]
    assert sorted(keys) == sorted(expected), "every stored face once"
    for rank, (key, hit) in enumerate(zip(keys, hits)):
        # Its score is its own cosine, and the face at each rank scores what brute force has there.
        assert abs(hit["score"] - expected[key]) <= 1e-4, (rank, key, hit["score"], expected[key])
        assert abs(expected[key] - ranked[rank]) <= 1e-4, (rank, key, expected[key], ranked[rank])
    faces = len(face_gateway.get(f"/images/{image_id}").json()["faces"])
    r = face_gateway.get(f"/images/{image_id}/faces/{faces}/similar")
    assert r.status_code == 404 and f"there is no face {faces}" in r.json()["error"], r.text
