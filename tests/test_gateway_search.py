"""The gateway's search results against an independent computation, on both stores.

The references never go through the gateway: text query embeddings come from this test's
own CLIP tokenizer (tests/clip_tokens.py) sent to Triton's `clip_text` over HTTP, photo and
box embeddings from this test's own `visual_ingest` calls (every output requested) on the
same photo bytes. The expected rankings are brute-force cosines over every stored photo or
object. Each check runs on the session gateway (embedded store, the 50 photos of the
`indexed` fixture) and on an OpenSearch gateway that ingests the same 50 photos into a
fresh index through /ingest/batch; with 50 photos OpenSearch's HNSW must give the exact
ranking.

- tokenizer: equals open_clip's ids (clip-tokenizer/tests/fixtures) on every fixture
  string except the ones that need ftfy's character fixes;
- stored records: width/height, and per object class, confidence and box, equal what
  visual_ingest returned, after the gateway's detection rule;
- /search/text for 24 COCO captions: every score within 1e-4 of the brute-force cosine,
  the same ids in the same order (swaps only between scores closer than 1e-4), each
  result's `matched_object` the image's best object; one page with an offset;
- /search/similar with photos that are not stored (their visual_ingest embedding is the
  query) and with a stored photo (its own embedding: itself first at cosine 1);
- /search/objects by text and by image (a crop of a stored object, and an unstored photo):
  every hit names the stored object (image, index, box, class, confidence) whose
  embedding gives its score, ranked as brute force over all stored objects (the stores
  rank objects individually: no per-image aggregation, an image may appear several times);
- /search/region (a box drawn on a photo): the query is the box cropped from the
  full-resolution photo with the crop reference (tests/crop_reference.py, from
  docs/crop-semantics.md; preprocess_reference.py for EXIF orientation and the cap) and
  encoded by onnxruntime on clip_image's model.onnx, cosine >= 0.9999 with this test's own
  region_embed call on the box mapped to the letterbox here, which must hand the box back;
  every hit scores what brute force gives with that embedding as the query, on a stored
  object's box (that object first, cosine >= 0.9999), an unstored photo, an EXIF-turned one
  and one over preprocess's original_max_side; bad forms, boxes and photos are 4xx naming
  the problem;
- "more like this" from a stored photo or object (GET /images/{id}/similar,
  /images/{id}/objects/{i}/similar): itself first at cosine 1, then brute force; a missing
  image, object or face, a bad id or index: 404 or 400 naming it.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

import preprocess_reference
from clip_tokens import CONTEXT, EOT, SOT, ClipTokenizer
from conftest import SOURCE_REPO, config_parameters, crop_params, read_config
from crop_reference import crop, map_and_check
from kserve_http import infer
from test_gateway import (  # noqa: F401  (gateway, indexed: fixtures)
    COCO_IMAGES,
    INDEXED,
    TOKENIZER_DIR,
    gateway,
    indexed,
    photo_paths,
    read_bytes,
    sha256,
)
from test_gateway_opensearch import opensearch_gateway

COCO_DIR = os.path.dirname(COCO_IMAGES)
TOKENIZER_FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "clip-tokenizer", "tests", "fixtures", "open_clip_ids.json")
INGEST_OUTPUTS = ["image_size", "num_dets", "boxes", "scores", "classes", "embedding", "box_embeddings", "box_valid"]
TOL = 1e-4  # scores: cosine within this of brute force; ranks may swap only below it
QUERIES = 24  # distinct COCO captions for text search
OBJECT_QUERIES = 8  # of them, also used for object search by text
# The gateway's `models.min_detection_confidence` (gateway/src/config.rs default; the test
# gateways run with the defaults).
MIN_DETECTION_CONFIDENCE = 0.0
# Fixture strings whose open_clip ids need ftfy fixes clip_tokens.py does not make.
NEEDS_FTFY = {"ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３": "fullwidth forms", "ﬁne ﬂowers in the ﬀ": "ligatures",
              "don’t “quote” me": "curly quotes", "c1 \x93quoted\x94 \x85": "C1 controls as Windows-1252",
              "ǅemal and ĳs": "Latin ligatures"}


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def coco_class_names() -> list[str]:
    """COCO-80 in detector order: the annotation file's categories sorted by id."""
    with open(os.path.join(COCO_DIR, "instances_val2017_subset.json")) as f:
        categories = json.load(f)["categories"]
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


@dataclass
class Obj:
    class_id: int
    confidence: float
    bbox: list[float]
    embedding: np.ndarray


@dataclass
class Photo:
    width: int
    height: int
    embedding: np.ndarray
    objects: list[Obj]


def analyse(url: str, data: bytes) -> Photo:
    """visual_ingest on the photo bytes, every output requested, read the way the gateway's
    decode_ingest (gateway/src/pipeline.rs) reads it: the first num_dets rows; a row with
    box_valid false or a score under models.min_detection_confidence is not stored, and the
    kept rows keep their order, so object index = position among the kept rows; every
    embedding L2-normalised; width/height from image_size ([height, width])."""
    r = infer(url, "visual_ingest", {"image": np.frombuffer(data, np.uint8)[None, :]}, INGEST_OUTPUTS)
    assert r.ok, r.error
    out = {k: v[0] for k, v in r.outputs.items()}
    height, width = (int(v) for v in r.outputs["image_size"].reshape(-1))
    count = int(out["num_dets"].reshape(-1)[0])
    objects = [Obj(int(out["classes"][i]), float(out["scores"][i]), [float(v) for v in out["boxes"][i]],
                   unit(out["box_embeddings"][i]))
               for i in range(count)
               if bool(out["box_valid"][i]) and out["scores"][i] >= MIN_DETECTION_CONFIDENCE]
    return Photo(width, height, unit(out["embedding"].reshape(-1)), objects)


def analyse_all(url: str, datas: list[bytes]) -> list[Photo]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda d: analyse(url, d), datas))


def captions(n: int) -> list[str]:
    """n distinct COCO captions: the first caption (by annotation id) of each photo, photos
    by file name."""
    with open(os.path.join(COCO_DIR, "captions_val2017_subset.json")) as f:
        doc = json.load(f)
    names = {im["id"]: im["file_name"] for im in doc["images"]}
    first: dict[str, str] = {}
    for ann in sorted(doc["annotations"], key=lambda a: a["id"]):
        first.setdefault(names[ann["image_id"]], ann["caption"].strip())
    out: list[str] = []
    for name in sorted(first):
        if first[name].lower() not in {c.lower() for c in out}:
            out.append(first[name])
    return out[:n]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# Reference data and the two stores

@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def stored(triton, gateway, indexed) -> dict[str, Photo]:
    """This test's own visual_ingest reading of every stored photo, by image id."""
    ids = list(indexed)
    photos = analyse_all(triton.http_url, [read_bytes(indexed[i]) for i in ids])
    return dict(zip(ids, photos))


@pytest.fixture(scope="module")
def text_queries(triton, tokenizer) -> dict[str, np.ndarray]:
    """Caption -> unit embedding from clip_text on this test's own tokens."""
    texts = captions(QUERIES)
    assert len(texts) == QUERIES
    rows = np.array([tokenizer(t) for t in texts], np.int64)
    r = infer(triton.http_url, "clip_text", {"tokens": rows}, ["embeddings"])
    assert r.ok, r.error
    return dict(zip(texts, unit(r.outputs["embeddings"])))


@pytest.fixture(scope="module")
def opensearch_store(triton, gateway, indexed, opensearch_url, tmp_path_factory):
    """An OpenSearch gateway holding the same photos, ingested through the gateway into a
    fresh index (module scope, so the 50 photos are ingested once: test_gateway_opensearch's
    `index_name` is per test; the name and clean-up follow it)."""
    index = f"gateway-search-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    server = opensearch_gateway(triton, str(tmp_path_factory.mktemp("opensearch-search")), opensearch_url, index)
    server.start()
    try:
        paths = list(indexed.values())
        for start in range(0, len(paths), 10):
            files = [("image", (os.path.basename(p), read_bytes(p))) for p in paths[start:start + 10]]
            r = server.post("/ingest/batch", files=files)
            assert r.status_code == 200, r.text
            assert [x["status"] for x in r.json()["results"]] == ["created"] * len(files), r.text
        yield server
    finally:
        server.stop()
        requests.delete(f"{opensearch_url}/{index}", timeout=30)


@pytest.fixture(scope="module", params=["embedded", "opensearch"])
def store(request, gateway, indexed):
    server = gateway if request.param == "embedded" else request.getfixturevalue("opensearch_store")
    health = server.get("/health").json()
    assert health["store"]["kind"] == request.param, health
    # The brute force covers exactly the stored photos.
    assert health["store"]["images"] == len(indexed) == INDEXED, health
    return server


# Comparison with brute force

def check_ranking(hits: list[dict], expected: dict, key, what: str, offset: int = 0) -> None:
    """`hits` (the gateway's, best first, from rank `offset`) against `expected`, the
    brute-force cosine of every stored candidate: each hit's score is its candidate's cosine,
    no candidate twice, and the candidate at each rank scores (by brute force) what the
    brute-force ranking has at that rank, within TOL (so only near-ties may swap)."""
    ranked = sorted(expected.values(), reverse=True)
    assert hits and len(hits) <= len(ranked) - offset, f"{what}: {len(hits)} hits"
    keys = [key(h) for h in hits]
    assert len(set(keys)) == len(keys), f"{what}: a candidate appears twice: {keys}"
    for rank, (k, hit) in enumerate(zip(keys, hits), start=offset):
        assert k in expected, f"{what}: rank {rank} is {k}, which is not stored"
        assert abs(hit["score"] - expected[k]) <= TOL, \
            f"{what}: rank {rank} {k} scored {hit['score']:.6f}, brute force {expected[k]:.6f}"
        assert abs(expected[k] - ranked[rank]) <= TOL, \
            f"{what}: rank {rank} is {k} (cosine {expected[k]:.6f}), brute force has {ranked[rank]:.6f} there"


def check_spread(expected: dict, what: str) -> None:
    """The ranking check has teeth only when the cosines are told apart: most neighbouring
    brute-force scores must differ by more than TOL."""
    ranked = sorted(expected.values(), reverse=True)
    gaps = np.diff(ranked)
    assert ranked[0] - ranked[-1] > 100 * TOL and np.mean(np.abs(gaps) > TOL) > 0.5, f"{what}: cosines {ranked[:10]}"


def image_scores(stored: dict[str, Photo], query: np.ndarray) -> dict[str, float]:
    return {image_id: float(photo.embedding @ query) for image_id, photo in stored.items()}


def object_scores(stored: dict[str, Photo], query: np.ndarray) -> dict[tuple[str, int], float]:
    """Every stored object on its own (both stores rank objects, not images)."""
    return {(image_id, i): float(o.embedding @ query)
            for image_id, photo in stored.items() for i, o in enumerate(photo.objects)}


def check_image_results(results: list[dict], stored: dict[str, Photo], query: np.ndarray, what: str,
                        offset: int = 0) -> None:
    check_ranking(results, image_scores(stored, query), lambda h: h["image_id"], what, offset)
    for hit in results:
        photo = stored[hit["image_id"]]
        assert (hit["width"], hit["height"]) == (photo.width, photo.height), hit
        assert len(hit["objects"]) == len(photo.objects), hit["image_id"]
        # matched_object: the image's object closest to the query.
        if not photo.objects:
            assert hit["matched_object"] is None, hit
            continue
        cosines = [float(o.embedding @ query) for o in photo.objects]
        matched = hit["matched_object"]
        assert abs(matched["score"] - max(cosines)) <= TOL, (what, hit["image_id"], matched, max(cosines))
        assert abs(cosines[matched["index"]] - max(cosines)) <= TOL, (what, hit["image_id"], matched)


def check_object_results(results: list[dict], stored: dict[str, Photo], query: np.ndarray, what: str,
                         names: list[str]) -> None:
    check_ranking(results, object_scores(stored, query), lambda h: (h["image_id"], h["object_index"]), what)
    for hit in results:
        photo = stored[hit["image_id"]]
        obj = photo.objects[hit["object_index"]]
        assert hit["bbox"] == pytest.approx(obj.bbox, abs=1e-3), (what, hit, obj.bbox)
        assert hit["class_name"] == names[obj.class_id], (what, hit)
        assert hit["confidence"] == pytest.approx(obj.confidence, abs=1e-6), (what, hit)
        assert (hit["width"], hit["height"]) == (photo.width, photo.height), hit


def all_objects(stored: dict[str, Photo]) -> int:
    return sum(len(p.objects) for p in stored.values())


def results(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["results"]


# The tests

def test_clip_tokens_equal_open_clip(tokenizer):
    with open(TOKENIZER_FIXTURE) as f:
        cases = json.load(f)["cases"]
    checked = [c for c in cases if c["text"] not in NEEDS_FTFY]
    assert len(checked) == len(cases) - len(NEEDS_FTFY) >= 30, "the fixture changed: review NEEDS_FTFY"
    for case in checked:
        ids = tokenizer(case["text"])
        assert len(ids) == CONTEXT and ids[0] == SOT and EOT in ids
        assert ids == case["ids"], case["text"]


def test_stored_records_equal_visual_ingest(store, stored):
    names = coco_class_names()
    assert len(names) == 80
    assert all_objects(stored) > len(stored), "the detector should find objects in these photos"
    for image_id, photo in stored.items():
        r = store.get(f"/images/{image_id}")
        assert r.status_code == 200, r.text
        record = r.json()
        assert record["id"] == image_id
        assert (record["width"], record["height"]) == (photo.width, photo.height), image_id
        assert len(record["objects"]) == len(photo.objects), image_id
        for i, (got, want) in enumerate(zip(record["objects"], photo.objects)):
            assert got["index"] == i
            assert (got["class_id"], got["class_name"]) == (want.class_id, names[want.class_id]), (image_id, got)
            assert got["confidence"] == pytest.approx(want.confidence, abs=1e-6), (image_id, got)
            assert got["bbox"] == pytest.approx(want.bbox, abs=1e-3), (image_id, got)


def test_text_search_equals_brute_force(store, stored, text_queries):
    for text, query in text_queries.items():
        expected = image_scores(stored, query)
        check_spread(expected, text)
        hits = results(store.get("/search/text", params={"q": text, "k": len(stored)}))
        assert len(hits) == len(stored), text
        check_image_results(hits, stored, query, f"text {text!r}")
    # A page further down the same ranking.
    text, query = next(iter(text_queries.items()))
    page = results(store.get("/search/text", params={"q": text, "k": 10, "offset": 15}))
    assert len(page) == 10
    check_image_results(page, stored, query, f"text {text!r}, offset 15", offset=15)


def test_similar_search_equals_brute_force(store, stored, indexed, triton):
    # Photos that are not stored: the query is their visual_ingest embedding.
    queries = photo_paths()[INDEXED:INDEXED + 3]
    photos = analyse_all(triton.http_url, [read_bytes(p) for p in queries])
    for path, photo in zip(queries, photos):
        assert store.get(f"/images/{sha256(path)}").status_code == 404, "the query photo must not be stored"
        check_spread(image_scores(stored, photo.embedding), path)
        hits = results(store.post("/search/similar", params={"k": len(stored)},
                                  files={"image": (os.path.basename(path), read_bytes(path))}))
        assert len(hits) == len(stored)
        check_image_results(hits, stored, photo.embedding, f"similar to {os.path.basename(path)}")
    # A stored photo is its own query: itself first at cosine 1, then the others.
    image_id = list(stored)[7]
    hits = results(store.post("/search/similar", params={"k": len(stored)},
                              files={"image": ("q.jpg", read_bytes(indexed[image_id]))}))
    assert hits[0]["image_id"] == image_id and abs(hits[0]["score"] - 1.0) <= TOL, hits[:2]
    check_image_results(hits, stored, stored[image_id].embedding, "similar to a stored photo")


def test_object_search_by_text_equals_brute_force(store, stored, text_queries):
    names = coco_class_names()
    total = all_objects(stored)
    for text, query in list(text_queries.items())[:OBJECT_QUERIES]:
        expected = object_scores(stored, query)
        check_spread(expected, text)
        hits = results(store.post("/search/objects", json={"text": text, "k": total}))
        assert len(hits) == total, (text, len(hits), total)
        check_object_results(hits, stored, query, f"objects for {text!r}", names)


def test_object_search_by_image_equals_brute_force(store, stored, indexed, triton):
    names = coco_class_names()
    total = all_objects(stored)
    # A crop of the largest stored object (PNG: new bytes, so not a stored photo), and a
    # photo that is not stored; each query is this test's visual_ingest embedding of the bytes.
    def area(item):
        x1, y1, x2, y2 = item[1].bbox
        return (x2 - x1) * (y2 - y1)

    image_id, obj = max(((i, o) for i, p in stored.items() for o in p.objects), key=area)
    with Image.open(indexed[image_id]) as im:
        crop = png(ImageOps.exif_transpose(im).convert("RGB").crop(tuple(round(v) for v in obj.bbox)))
    other = photo_paths()[INDEXED + 3]
    queries = [("crop.png", crop), (os.path.basename(other), read_bytes(other))]
    embeddings = [p.embedding for p in analyse_all(triton.http_url, [data for _, data in queries])]
    for (name, data), query in zip(queries, embeddings):
        expected = object_scores(stored, query)
        check_spread(expected, name)
        hits = results(store.post("/search/objects", params={"k": total}, files={"image": (name, data)}))
        assert len(hits) == total, (name, len(hits), total)
        check_object_results(hits, stored, query, f"objects like {name}", names)


def preprocess_config() -> dict:
    """Parameters of model_repository/preprocess, which the references follow."""
    return config_parameters(read_config(os.path.join(SOURCE_REPO, "preprocess")))


def reference_region(data: bytes, bbox: list[float], encoder, box_config) -> np.ndarray:
    """The box (photo pixels after EXIF orientation) cropped as docs/crop-semantics.md says
    from preprocess's capped original (PIL's decode and resize) and encoded by onnxruntime."""
    photo = preprocess_reference.decode(data)
    original = preprocess_reference.original(photo, int(preprocess_config()["original_max_side"]))
    (h, w), (oh, ow) = photo.shape[:2], original.shape[:2]
    box = [bbox[0] * ow / w, bbox[1] * oh / h, bbox[2] * ow / w, bbox[3] * oh / h]
    params = crop_params(box_config)
    clamped = map_and_check(box, [1.0, 0.0, 0.0], ow, oh, params)
    assert clamped is not None, (bbox, box)
    return unit(encoder(crop(original, clamped, params)[None])[0])


def triton_region(url: str, data: bytes, bbox: list[float]) -> np.ndarray:
    """This test's own region_embed call: the box mapped to the letterbox with
    preprocess_reference's geometry; box_embed must hand back the same box, valid."""
    config = preprocess_config()
    photo = preprocess_reference.decode(data)
    h, w = photo.shape[:2]
    oh, ow = preprocess_reference.capped_size(h, w, int(config["original_max_side"]))
    scale, pad_x, pad_y = (float(v) for v in preprocess_reference.letterbox_transform(
        h, w, (oh, ow), int(config["yolo_size"])))
    sx, sy = ow / w, oh / h
    lb = [bbox[0] * sx * scale + pad_x, bbox[1] * sy * scale + pad_y,
          bbox[2] * sx * scale + pad_x, bbox[3] * sy * scale + pad_y]
    r = infer(url, "region_embed", {"image": np.frombuffer(data, np.uint8)[None, :],
                                    "det_boxes": np.array([[lb]], np.float32),
                                    "num_dets": np.array([[1]], np.int32)},
              ["image_size", "boxes", "box_embeddings", "box_valid"])
    assert r.ok, r.error
    assert r.outputs["image_size"].reshape(-1).tolist() == [h, w]
    assert bool(r.outputs["box_valid"].reshape(-1)[0]), bbox
    assert r.outputs["boxes"].reshape(-1) == pytest.approx(bbox, abs=1e-3 * max(h, w) / 640)
    return unit(r.outputs["box_embeddings"].reshape(-1))


def region_queries(stored, indexed) -> list[tuple[str, bytes, list[float]]]:
    """(name, photo bytes, box): a stored object's own box on its stored photo; a box on a
    photo that is not stored; the same on a PNG whose EXIF orientation turns it (the box is in
    the turned photo's pixels); and on a PNG over preprocess's original_max_side."""
    def area(item):
        x1, y1, x2, y2 = item[1].bbox
        return (x2 - x1) * (y2 - y1)

    image_id, obj = max(((i, o) for i, p in stored.items() for o in p.objects), key=area)
    queries = [("a stored object's box", read_bytes(indexed[image_id]), list(obj.bbox))]
    other, turned, large = (photo_paths()[INDEXED + i] for i in (4, 5, 6))
    with Image.open(other) as im:
        w, h = im.size
    queries.append(("an unstored photo", read_bytes(other), [0.2 * w, 0.25 * h, 0.7 * w, 0.9 * h]))
    with Image.open(turned) as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned 90 degrees clockwise: the photo is h x w
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="PNG", exif=exif)
        h, w = im.size
    queries.append(("an EXIF-turned photo", buf.getvalue(), [0.1 * w, 0.3 * h, 0.6 * w, 0.8 * h]))
    max_side = int(preprocess_config()["original_max_side"])
    with Image.open(large) as im:
        factor = max_side / max(im.size) * 1.4
        big = im.convert("RGB").resize((round(im.width * factor), round(im.height * factor)), Image.BICUBIC)
    w, h = big.size
    assert max(w, h) > max_side
    queries.append(("a photo over the cap", png(big), [0.3 * w, 0.1 * h, 0.95 * w, 0.6 * h]))
    return queries


def test_region_search_equals_reference_crop_and_brute_force(store, stored, indexed, triton, encoder, box_config):
    names = coco_class_names()
    total = all_objects(stored)
    for name, data, bbox in region_queries(stored, indexed):
        reference = reference_region(data, bbox, encoder, box_config)
        direct = triton_region(triton.http_url, data, bbox)
        assert float(direct @ reference) >= 0.9999, (name, float(direct @ reference))
        check_spread(object_scores(stored, reference), name)
        box = ",".join(repr(float(v)) for v in bbox)
        hits = results(store.post("/search/region", params={"k": total},
                                  files={"image": ("q.png", data), "box": (None, box)}))
        assert len(hits) == total, (name, len(hits), total)
        # Brute force with the direct call's embedding: within TOL. The reference's float64 crop
        # moves single scores by up to about |direct - reference| (1e-4 and more), so it is held
        # to the direct one by its cosine above rather than score by score.
        check_object_results(hits, stored, direct, f"region of {name}", names)
    # The stored object's own box: that object first, at cosine 1 with its stored embedding.
    name, data, bbox = region_queries(stored, indexed)[0]
    hits = results(store.post("/search/region", params={"k": 3, "min_score": 0.5},
                              files={"image": ("q.jpg", data), "box": (None, json.dumps(bbox))}))
    top = hits[0]
    assert top["image_id"] == sha256_bytes(data) and top["bbox"] == pytest.approx(bbox, abs=1e-3), top
    assert top["score"] >= 0.9999, top


def test_region_search_bad_input_is_a_clear_error(gateway, indexed):
    data = read_bytes(next(iter(indexed.values())))
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    cases = [
        ({"image": ("q.jpg", data)}, 400, "the form has no box field"),
        ({"box": (None, "1,2,3,4")}, 400, "the form has no image field"),
        ({"image": ("q.jpg", data), "box": (None, "1,2,3")}, 400, "got 3 number(s)"),
        ({"image": ("q.jpg", data), "box": (None, "[1,2,3,4,5]")}, 400, "got 5 number(s)"),
        ({"image": ("q.jpg", data), "box": (None, "1,2,nan,4")}, 400, '"nan" is not a finite number'),
        ({"image": ("q.jpg", data), "box": (None, "50,10,40,30")}, 400, "x1 < x2"),
        ({"image": ("q.jpg", data), "box": (None, f"0,0,{w + 1},{h}")}, 400, f"not inside the {w}x{h} photo"),
        ({"image": ("q.jpg", data), "box": (None, "10,10,10.5,40")}, 400, "too small to crop"),
        ({"image": ("q.txt", b"not a photo at all"), "box": (None, "1,2,3,4")}, 422, "not a JPEG, PNG or WebP"),
        ({"image": ("q.jpg", data[:len(data) // 2]), "box": (None, "1,2,3,4")}, 422, "truncated"),
        ({"image": ("q.jpg", data), "box": (None, "1,2,30,40")}, None, ""),
    ]
    for files, status, needle in cases:
        r = gateway.post("/search/region", files=files)
        if status is None:
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == status and needle in r.json()["error"], (files.get("box"), r.status_code, r.text)


def test_more_like_a_stored_photo_or_object_equals_brute_force(store, stored):
    """GET /images/{id}/similar and /images/{id}/objects/{i}/similar search from the stored
    vector: the photo or object itself first at cosine 1, then brute force over this test's
    own visual_ingest vectors."""
    names = coco_class_names()
    total = all_objects(stored)
    with_objects = [i for i, p in stored.items() if len(p.objects) >= 2]
    for image_id in list(stored)[3:5] + with_objects[:1]:
        query = stored[image_id].embedding
        check_spread(image_scores(stored, query), image_id)
        hits = results(store.get(f"/images/{image_id}/similar", params={"k": len(stored)}))
        assert len(hits) == len(stored)
        assert hits[0]["image_id"] == image_id and abs(hits[0]["score"] - 1.0) <= TOL, hits[:2]
        check_image_results(hits, stored, query, f"more like {image_id}")
    image_id = with_objects[0]
    for index in (0, len(stored[image_id].objects) - 1):
        query = stored[image_id].objects[index].embedding
        check_spread(object_scores(stored, query), f"object {index}")
        hits = results(store.get(f"/images/{image_id}/objects/{index}/similar", params={"k": total}))
        assert len(hits) == total, (len(hits), total)
        assert (hits[0]["image_id"], hits[0]["object_index"]) == (image_id, index), hits[:2]
        check_object_results(hits, stored, query, f"more like object {index} of {image_id}", names)
    # A page of the same ranking.
    page = results(store.get(f"/images/{image_id}/objects/0/similar", params={"k": 3, "offset": 2}))
    check_ranking(page, object_scores(stored, stored[image_id].objects[0].embedding),
                  lambda h: (h["image_id"], h["object_index"]), "a page", offset=2)


def test_more_like_a_missing_photo_or_part_is_a_clear_error(store, stored):
    image_id = next(iter(stored))
    count = len(stored[image_id].objects)
    unknown = "0" * 64
    cases = [
        (f"/images/{unknown}/similar", 404, f"no image {unknown}"),
        ("/images/not-an-id/similar", 400, "not an image id"),
        (f"/images/{image_id}/objects/{count}/similar", 404, f"has {count} object(s): there is no object {count}"),
        (f"/images/{image_id}/faces/0/similar", 404, "has 0 face(s): there is no face 0"),
        (f"/images/{image_id}/objects/-1/similar", 400, ""),
        (f"/images/{image_id}/objects/x/similar", 400, ""),
        (f"/images/{image_id}/similar?k=0", 400, "k must be between"),
    ]
    for path, status, needle in cases:
        r = store.get(path)
        assert r.status_code == status and needle in r.json()["error"], (path, r.status_code, r.text)


def test_the_comparison_rejects_wrong_results():
    """check_ranking itself: near-ties may swap; a wrong score, a swap of told-apart scores,
    a repeated or unknown candidate, or a ranking that starts elsewhere fail."""
    expected = {"a": 0.9, "b": 0.5, "c": 0.49995, "d": 0.1}

    def hit(k, score=None):
        return {"id": k, "score": expected[k] if score is None else score}

    def key(h):
        return h["id"]

    check_ranking([hit("a"), hit("c"), hit("b"), hit("d")], expected, key, "tie swap")
    check_ranking([hit("b"), hit("c")], expected, key, "page", offset=1)
    wrong = {
        "score off by 2e-4": [hit("a"), hit("b", 0.5002), hit("c"), hit("d")],
        "swap of told-apart scores": [hit("b"), hit("a"), hit("c"), hit("d")],
        "repeated candidate": [hit("a"), hit("a"), hit("b")],
        "unknown candidate": [hit("a"), {"id": "x", "score": 0.5}],
        "page from the wrong rank": [hit("a"), hit("b")],
    }
    for name, hits in wrong.items():
        with pytest.raises(AssertionError):
            check_ranking(hits, expected, key, name, offset=1 if name == "page from the wrong rank" else 0)
    with pytest.raises(AssertionError):
        check_spread({"a": 0.5, "b": 0.50001, "c": 0.50002}, "flat")
