"""End-to-end tests of the box_embed Rust backend in a real tritonserver.

Every expected embedding comes from the numpy crop reference (crop_reference.py, written
from docs/crop-semantics.md) run through onnxruntime on the same model.onnx that clip_image serves.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import MISSING_ENCODER, REPO_ROOT, crop_params
from crop_reference import CONTEXT, PAD, STRETCH, reference
from kserve_http import infer
from letterbox import to_letterbox, yolo_letterbox

COCO_DIR = os.environ.get("COCO_SUBSET_DIR", os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "coco_val2017_subset")))
OUTPUTS = ["box_embeddings", "box_valid"]
MIN_COS = 0.9999
POLICY_MODELS = {"box_embed": STRETCH, "box_embed_pad": PAD, "box_embed_context": CONTEXT}
NAN, INF = float("nan"), float("inf")

pytestmark = pytest.mark.usefixtures("box_embed_ready")


# ---------------------------------------------------------------------------------------
# Cases and checking

@dataclass
class Case:
    model: str
    image: np.ndarray  # UINT8 [H,W,3]
    boxes: np.ndarray  # FP32 [K,4], letterbox pixels
    num_dets: int
    letterbox: np.ndarray  # FP32 [3]
    label: str = ""

    def inputs(self) -> dict:
        return {
            "original": self.image[None],
            "det_boxes": np.asarray(self.boxes, np.float32).reshape(1, -1, 4),
            "num_dets": np.array([[self.num_dets]], np.int32),
            "letterbox": np.asarray(self.letterbox, np.float32).reshape(1, 3),
        }


def policy_of(model: str, box_config: dict) -> str:
    return POLICY_MODELS.get(model, box_config["crop_policy"])


def expected(case: Case, encoder, box_config) -> tuple[np.ndarray, np.ndarray]:
    return reference(case.image, np.asarray(case.boxes, np.float32), case.num_dets,
                     np.asarray(case.letterbox, np.float32),
                     crop_params(box_config, policy_of(case.model, box_config)), encoder)


def compare(result, exp_emb: np.ndarray, exp_valid: np.ndarray, label: str = "") -> list[str]:
    """Problems with one response (empty list = correct)."""
    tag = f"[{label}] " if label else ""
    if not result.ok:
        return [f"{tag}request failed: HTTP {result.status}: {result.error}"]
    n, dim = exp_emb.shape
    emb = result.outputs.get("box_embeddings")
    valid = result.outputs.get("box_valid")
    if emb is None or valid is None:
        return [f"{tag}missing outputs: {sorted(result.outputs)}"]
    if emb.shape != (1, n, dim) or valid.shape != (1, n):
        return [f"{tag}shapes {emb.shape} {valid.shape}, expected (1, {n}, {dim}) (1, {n})"]
    emb, valid = emb[0], valid[0]
    problems = []
    if not np.array_equal(valid, exp_valid):
        bad = np.flatnonzero(valid != exp_valid).tolist()
        problems.append(f"{tag}box_valid differs at rows {bad}: got {valid[bad].tolist()}")
    invalid_nonzero = np.flatnonzero(~valid & np.any(emb != 0, axis=1)).tolist()
    if invalid_nonzero:
        problems.append(f"{tag}invalid rows not all-zero: {invalid_nonzero}")
    both = valid & exp_valid
    if both.any():
        got, want = emb[both].astype(np.float64), exp_emb[both].astype(np.float64)
        cos = (got * want).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-30)
        rows = np.flatnonzero(both)
        low = [(int(rows[i]), round(float(cos[i]), 6)) for i in np.flatnonzero(~(cos >= MIN_COS))]
        if low:
            problems.append(f"{tag}rows with cosine < {MIN_COS} vs reference (row, cos): {low[:10]}"
                            f"{' ...' if len(low) > 10 else ''}")
        norms = np.linalg.norm(got, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            problems.append(f"{tag}valid rows not unit norm: {norms[np.abs(norms - 1) > 1e-3][:5]}")
    return problems


def run_cases(url: str, cases: list[Case], expectations: list, workers: int = 4) -> list[str]:
    def one(i):
        return compare(infer(url, cases[i].model, cases[i].inputs(), OUTPUTS), *expectations[i], cases[i].label)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [p for ps in pool.map(one, range(len(cases))) for p in ps]


def concurrently(fns: list, timeout: float = 300.0) -> list:
    """Run callables at the same moment (barrier) so the dynamic batcher sees them together."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def worker(i):
        barrier.wait(timeout=60)
        try:
            results[i] = fns[i]()
        except Exception as e:  # keep the thread's failure visible to the asserting test
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "requests still running after the timeout"
    return results


# ---------------------------------------------------------------------------------------
# Data: COCO photos with their annotated boxes

@lru_cache(maxsize=None)
def coco_annotations() -> dict:
    path = os.path.join(COCO_DIR, "instances_val2017_subset.json")
    if not os.path.exists(path):
        pytest.fail(f"COCO subset not found at {COCO_DIR} (expected ../shared beside the repo; "
                    f"set COCO_SUBSET_DIR to point elsewhere)")
    with open(path) as f:
        data = json.load(f)
    boxes: dict = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        # Boxes near the 1-px min_box_size would make validity depend on f32 rounding.
        if w >= 2 and h >= 2:
            boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    files = {im["id"]: im["file_name"] for im in data["images"]}
    return {files[i]: np.array(b, np.float64) for i, b in sorted(boxes.items())}


@lru_cache(maxsize=None)
def load_image(file_name: str) -> np.ndarray:
    with Image.open(os.path.join(COCO_DIR, "images", file_name)) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def coco_selection() -> list[str]:
    """Evenly spread photos (BOX_EMBED_COCO_IMAGES, default 40; 'all' for every one),
    always including the most crowded photo (more boxes than clip_image's max batch)."""
    ann = coco_annotations()
    names = sorted(ann)
    wanted = os.environ.get("BOX_EMBED_COCO_IMAGES", "40")
    if wanted != "all" and int(wanted) < len(names):
        step = len(names) / int(wanted)
        picked = {names[int(i * step)] for i in range(int(wanted))}
        picked.add(max(names, key=lambda n: len(ann[n])))
        names = sorted(picked)
    return names


def coco_case(model: str, file_name: str) -> Case:
    image = load_image(file_name)
    h, w = image.shape[:2]
    lb = yolo_letterbox(w, h)
    boxes = to_letterbox(coco_annotations()[file_name], lb)
    return Case(model, image, boxes, len(boxes), lb, f"{model}:{file_name}")


PHOTO = "000000000139.jpg"  # 640x426: letterbox (1, 0, 107)


def photo_case(model: str, boxes_orig, extra_lb=None, label="") -> Case:
    """Boxes given in original pixels (finite ones mapped to letterbox), plus raw letterbox rows."""
    image = load_image(PHOTO)
    lb = yolo_letterbox(image.shape[1], image.shape[0])
    rows = []
    for b in boxes_orig:
        rows.append(to_letterbox(np.array(b), lb)[0] if np.all(np.isfinite(b)) else
                    np.array([v * lb[0] + lb[1 + (i % 2)] for i, v in enumerate(b)], np.float32))
    for b in extra_lb or []:
        rows.append(np.array(b, np.float32))
    boxes = np.array(rows, np.float32).reshape(-1, 4)
    return Case(model, image, boxes, len(boxes), lb, label or model)


def random_boxes(rng, w: int, h: int, n: int) -> np.ndarray:
    x1 = rng.uniform(0, w - 16, n)
    y1 = rng.uniform(0, h - 16, n)
    x2 = x1 + rng.uniform(8, w, n).clip(max=w - x1)
    y2 = y1 + rng.uniform(8, h, n).clip(max=h - y1)
    return np.stack([x1, y1, x2, y2], axis=1)


def many_boxes_case(model: str, n: int, seed: int) -> Case:
    image = load_image(PHOTO)
    h, w = image.shape[:2]
    lb = yolo_letterbox(w, h)
    boxes = to_letterbox(random_boxes(np.random.RandomState(seed), w, h, n), lb)
    return Case(model, image, boxes, n, lb, f"{model}:{n} boxes")


def stats(url: str, model: str) -> dict:
    r = requests.get(f"{url}/v2/models/{model}/stats", timeout=30)
    r.raise_for_status()
    return r.json()["model_stats"][0]


def batched_executions(url: str, model: str) -> dict:
    """batch_size -> number of executions (compute_infer count) for batch sizes > 1."""
    return {b["batch_size"]: b["compute_infer"]["count"]
            for b in stats(url, model).get("batch_stats", []) if b["batch_size"] > 1}


# ---------------------------------------------------------------------------------------
# a. Real photos, every policy

@pytest.mark.parametrize("model", list(POLICY_MODELS))
def test_coco_photos_match_reference(triton, encoder, box_config, model):
    cases = [coco_case(model, n) for n in coco_selection()]
    assert max(c.num_dets for c in cases) > 32, "selection should include a photo with > 32 boxes"
    exps = [expected(c, encoder, box_config) for c in cases]
    assert all(v.all() for _, v in exps), "COCO boxes are all inside their photos: all rows valid"
    problems = run_cases(triton.http_url, cases, exps)
    assert not problems, "\n".join(problems[:30])


def test_policies_produce_different_crops(encoder, box_config):
    """Guards the test itself: for non-square boxes the three policies must disagree."""
    case = photo_case("box_embed", [[50, 60, 250, 300], [300, 100, 420, 180]])
    embs = {m: expected(Case(m, case.image, case.boxes, 2, case.letterbox), encoder, box_config)[0]
            for m in POLICY_MODELS}
    for a, b in (("box_embed", "box_embed_pad"), ("box_embed", "box_embed_context"),
                 ("box_embed_pad", "box_embed_context")):
        assert ((embs[a] * embs[b]).sum(1) < 0.999).all(), (a, b)


# ---------------------------------------------------------------------------------------
# b. Box counts and bad boxes

VALID_A = [50, 60, 250, 300]
VALID_B = [300, 100, 420, 180]
VALID_C = [400, 200, 630, 420]
PARTLY_OUTSIDE = [-40, -30, 120, 90]
TALL_THIN = [500, 10, 530, 400]
MIXED_BOXES = [
    (VALID_A, True),
    ([100, 100, 100, 200], False),   # zero width
    (VALID_B, True),
    ([NAN, 100, 200, 200], False),
    (VALID_C, True),
    ([300, 300, 200, 250], False),   # inverted
    (PARTLY_OUTSIDE, True),          # clamped, still valid
    ([100, 100, INF, 200], False),
    ([700, 50, 800, 150], False),    # right of the image
    (TALL_THIN, True),
    ([200, 200, 200.5, 300], False), # narrower than min_box_size
    ([-INF, 100, 200, 200], False),
    ([10, -120, 200, -10], False),   # above the image (in the letterbox padding)
    ([-300, 500, -100, 600], False), # below-left, outside
]


@pytest.mark.parametrize("model", list(POLICY_MODELS) + ["box_embed_small_encoder"])
def test_bad_boxes_are_invalid_and_others_unshifted(triton, encoder, box_config, model):
    case = photo_case(model, [b for b, _ in MIXED_BOXES], label=f"{model}:mixed")
    exp_emb, exp_valid = expected(case, encoder, box_config)
    assert exp_valid.tolist() == [v for _, v in MIXED_BOXES], "reference disagrees with the hand-made list"
    r = infer(triton.http_url, model, case.inputs(), OUTPUTS)
    problems = compare(r, exp_emb, exp_valid, case.label)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("k", [0, 5])
def test_zero_detections(triton, encoder, box_config, k):
    case = photo_case("box_embed", [VALID_A] * k)
    case.num_dets = 0
    r = infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS)
    assert r.ok, r.error
    assert r.outputs["box_embeddings"].shape == (1, 0, 512)
    assert r.outputs["box_valid"].shape == (1, 0)


def test_one_box(triton, encoder, box_config):
    case = photo_case("box_embed", [VALID_A])
    problems = compare(infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS),
                       *expected(case, encoder, box_config))
    assert not problems, "\n".join(problems)


def test_boxes_come_back_in_client_image_pixels(triton):
    """`boxes` maps each detection out of the letterbox into `original` pixels, or into the
    client's photo when `image_size` says `original` is a downscaled copy; clamped there."""
    image = np.zeros((50, 80, 3), np.uint8)
    letterbox = yolo_letterbox(80, 50)
    in_image = np.array([[8, 5, 40, 30], [-20, 10, 100, 60], [0, 0, 0, 0]], np.float32)
    detections = to_letterbox(in_image, letterbox)
    detections[2] = np.nan
    case = Case("box_embed", image, detections, 3, letterbox)
    r = infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS + ["boxes"])
    assert r.ok, r.error
    want = np.array([[8, 5, 40, 30], [0, 10, 80, 50], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(r.outputs["boxes"][0], want, atol=1e-3)

    inputs = dict(case.inputs(), image_size=np.array([[200, 320]], np.int32))
    r = infer(triton.http_url, "box_embed", inputs, OUTPUTS + ["boxes"])
    assert r.ok, r.error
    np.testing.assert_allclose(r.outputs["boxes"][0], want * 4, atol=1e-2)
    assert r.outputs["box_valid"][0].tolist() == [True, True, False]

    inputs["image_size"] = np.array([[0, 320]], np.int32)
    r = infer(triton.http_url, "box_embed", inputs, OUTPUTS)
    assert r.status == 400 and "image_size" in r.error, (r.status, r.error)


def test_rows_follow_num_dets_not_k(triton, encoder, box_config):
    # Rows past num_dets hold garbage (NaN) that must never be read.
    case = photo_case("box_embed", [VALID_A, VALID_B, VALID_C, TALL_THIN],
                      extra_lb=[[NAN, NAN, NAN, NAN]] * 6)
    case.num_dets = 4
    exp_emb, exp_valid = expected(case, encoder, box_config)
    assert exp_valid.all() and exp_emb.shape[0] == 4
    problems = compare(infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS), exp_emb, exp_valid)
    assert not problems, "\n".join(problems)


def test_all_boxes_invalid(triton, encoder, box_config):
    case = photo_case("box_embed", [b for b, v in MIXED_BOXES if not v])
    exp_emb, exp_valid = expected(case, encoder, box_config)
    assert not exp_valid.any()
    problems = compare(infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS), exp_emb, exp_valid)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("model,n", [
    ("box_embed", 100),               # K = max_boxes
    ("box_embed", 45),                # > clip_image max batch (32)
    ("box_embed_small_encoder", 10),  # > clip_image_b4 max batch (4): three chunks
    ("box_embed_small_encoder", 4),   # exactly one full chunk
])
def test_many_boxes_chunked_through_encoder(triton, encoder, box_config, model, n):
    case = many_boxes_case(model, n, seed=n)
    exp_emb, exp_valid = expected(case, encoder, box_config)
    assert exp_valid.all()
    problems = compare(infer(triton.http_url, model, case.inputs(), OUTPUTS), exp_emb, exp_valid, case.label)
    assert not problems, "\n".join(problems)


def test_bad_boxes_across_chunks_small_encoder(triton, encoder, box_config):
    """Invalid rows spread over several encoder chunks must not shift later chunks."""
    rng = np.random.RandomState(3)
    image = load_image(PHOTO)
    lb = yolo_letterbox(image.shape[1], image.shape[0])
    good = to_letterbox(random_boxes(rng, image.shape[1], image.shape[0], 11), lb)
    rows = []
    for i, g in enumerate(good):
        rows.append(g)
        if i % 3 == 1:
            rows.append(np.array([NAN, 1, 2, 3], np.float32) if i % 2 else np.array([5, 150, 5, 300], np.float32))
    case = Case("box_embed_small_encoder", image, np.array(rows, np.float32), len(rows), lb, "b4 mixed")
    exp_emb, exp_valid = expected(case, encoder, box_config)
    assert exp_valid.sum() == 11 and (~exp_valid).sum() >= 3
    problems = compare(infer(triton.http_url, case.model, case.inputs(), OUTPUTS), exp_emb, exp_valid)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------
# c. Dynamic batching of requests with different image sizes

def _sized_cases(model: str, count: int) -> list[Case]:
    """Photos of several sizes (COCO originals plus resized copies) with their own boxes."""
    names = coco_selection()
    cases = []
    for i in range(count):
        base = coco_case(model, names[(i * 7) % len(names)])
        if i % 3 == 1:
            # A smaller copy: other H/W and letterbox, same annotated objects.
            h, w = base.image.shape[:2]
            nw, nh = max(32, w * 2 // 3 - i), max(32, h * 2 // 3)
            img = np.asarray(Image.fromarray(base.image).resize((nw, nh), Image.BILINEAR))
            orig = coco_annotations()[names[(i * 7) % len(names)]] * [nw / w, nh / h, nw / w, nh / h]
            lb = yolo_letterbox(nw, nh)
            keep = ((orig[:, 2] - orig[:, 0]) >= 2) & ((orig[:, 3] - orig[:, 1]) >= 2)
            boxes = to_letterbox(orig[keep], lb)
            base = Case(model, np.ascontiguousarray(img), boxes, len(boxes), lb, f"{base.label} resized {nw}x{nh}")
        cases.append(base)
    return cases


def test_dynamic_batch_of_different_sizes(triton, encoder, box_config):
    cases = _sized_cases("box_embed", 16)
    assert len({c.image.shape for c in cases}) >= 4
    exps = [expected(c, encoder, box_config) for c in cases]
    before = batched_executions(triton.http_url, "box_embed")
    grew = False
    for _ in range(5):  # bounded: batching depends on timing; a few rounds make it certain
        results = concurrently([lambda c=c: infer(triton.http_url, c.model, c.inputs(), OUTPUTS) for c in cases])
        problems = [p for r, c, e in zip(results, cases, exps)
                    for p in (compare(r, *e, c.label) if not isinstance(r, Exception) else [f"{c.label}: {r!r}"])]
        assert not problems, "\n".join(problems[:30])
        after = batched_executions(triton.http_url, "box_embed")
        if any(after.get(b, 0) > before.get(b, 0) for b in after):
            grew = True
            break
    assert grew, \
        f"no execution with batch_size > 1 in box_embed stats: {stats(triton.http_url, 'box_embed').get('batch_stats')}"


# ---------------------------------------------------------------------------------------
# d. Concurrency: every response checked against its own expected result

def test_concurrent_clients_get_their_own_results(triton, encoder, box_config):
    threads, per_thread = 8, 6
    pool = (_sized_cases("box_embed", 8) + _sized_cases("box_embed_pad", 4)
            + _sized_cases("box_embed_small_encoder", 4) + [many_boxes_case("box_embed_context", 40, 9)])
    exps = [expected(c, encoder, box_config) for c in pool]

    def client(t):
        session = requests.Session()
        problems = []
        for m in range(per_thread):
            i = (t * per_thread + m * 5) % len(pool)
            r = infer(triton.http_url, pool[i].model, pool[i].inputs(), OUTPUTS, session=session)
            problems += compare(r, *exps[i], f"thread {t} req {m} {pool[i].label}")
        return problems

    results = concurrently([lambda t=t: client(t) for t in range(threads)])
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    problems = [p for r in results for p in r]
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])


# ---------------------------------------------------------------------------------------
# e. Bad requests: a clear error on that request only; the server keeps serving

def _bad(kind: str) -> Case:
    case = photo_case("box_embed", [VALID_A, VALID_B, VALID_C])
    if kind == "num_dets_gt_rows":
        case.num_dets = 5
    elif kind == "num_dets_gt_max_boxes":
        case = many_boxes_case("box_embed", 101, seed=1)
    elif kind == "negative_num_dets":
        case.num_dets = -1
    elif kind == "scale_zero":
        case.letterbox = np.array([0.0, 0.0, 107.0], np.float32)
    elif kind == "scale_nan":
        case.letterbox = np.array([NAN, 0.0, 107.0], np.float32)
    elif kind == "empty_image":
        case.image = np.zeros((0, 640, 3), np.uint8)
    else:
        raise ValueError(kind)
    case.label = kind
    return case


# What a clear message must mention (any one of), per problem.
BAD_REQUESTS = {
    "num_dets_gt_rows": ("num_dets",),
    "num_dets_gt_max_boxes": ("max_boxes", "100"),
    "negative_num_dets": ("num_dets",),
    "scale_zero": ("letterbox", "scale"),
    "scale_nan": ("letterbox", "scale"),
    "empty_image": ("original", "image"),
}


def _good_request_works(triton, encoder, box_config):
    case = photo_case("box_embed", [VALID_B, TALL_THIN])
    problems = compare(infer(triton.http_url, "box_embed", case.inputs(), OUTPUTS),
                       *expected(case, encoder, box_config))
    assert not problems, "server stopped serving correctly after a bad request:\n" + "\n".join(problems)


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_bad_request_gets_clear_error(triton, encoder, box_config, kind):
    r = infer(triton.http_url, "box_embed", _bad(kind).inputs(), OUTPUTS)
    assert r.status == 400, f"{kind}: expected HTTP 400, got {r.status}: {r.error or r.outputs.keys()}"
    assert r.error and any(w in r.error.lower() for w in BAD_REQUESTS[kind]), \
        f"{kind}: error does not name the problem ({BAD_REQUESTS[kind]}): {r.error!r}"
    _good_request_works(triton, encoder, box_config)


def test_missing_encoder_is_named(triton, encoder, box_config):
    url = triton.http_url
    load = requests.post(f"{url}/v2/repository/models/box_embed_missing_encoder/load", timeout=120)
    try:
        # The encoder is resolved on first use (it may load after box_embed), so the load succeeds.
        assert load.status_code == 200, load.text
        case = photo_case("box_embed_missing_encoder", [VALID_A, VALID_B])
        r = infer(url, case.model, case.inputs(), OUTPUTS)
        assert not r.ok, "a request needing a missing encoder must fail, not return zeros"
        assert r.status == 503 and MISSING_ENCODER in (r.error or "") and "not loaded" in r.error, (r.status, r.error)
        # Zero detections need no encoder: an ordinary answer with zero rows.
        case.num_dets = 0
        r0 = infer(url, case.model, case.inputs(), OUTPUTS)
        assert r0.ok and r0.status == 200, (r0.status, r0.error)
        assert r0.outputs["box_embeddings"].shape[-2] == 0 and r0.outputs["box_valid"].size == 0, \
            {k: v.shape for k, v in r0.outputs.items()}
    finally:
        requests.post(f"{url}/v2/repository/models/box_embed_missing_encoder/unload", timeout=60)
    _good_request_works(triton, encoder, box_config)


def test_mixed_good_and_bad_requests_in_one_batch(triton, encoder, box_config):
    good = _sized_cases("box_embed", 8)
    bad = [_bad(k) for k in BAD_REQUESTS]
    exps = [expected(c, encoder, box_config) for c in good]
    # Interleaved good/bad pairs; None marks a bad request.
    bad = bad + bad[:len(good) - len(bad)]
    cases = [x for i in range(len(good)) for x in ((good[i], exps[i]), (bad[i], None))]
    results = concurrently([lambda c=c: infer(triton.http_url, c.model, c.inputs(), OUTPUTS) for c, _ in cases])
    problems = []
    for (c, exp), r in zip(cases, results):
        if isinstance(r, Exception):
            problems.append(f"{c.label}: {r!r}")
        elif exp is None:
            if r.status != 400:
                problems.append(f"bad request {c.label}: HTTP {r.status} {r.error}")
        else:
            problems += compare(r, *exp, c.label)
    assert not problems, "\n".join(problems[:30])


# ---------------------------------------------------------------------------------------
# f. Metrics and statistics

def test_metrics_and_stats_count_requests(triton, encoder, box_config):
    before = stats(triton.http_url, "box_embed")["inference_stats"]
    _good_request_works(triton, encoder, box_config)
    text = requests.get(triton.metrics_url, timeout=30).text
    m = re.search(r'^nv_inference_request_success\{model="box_embed",version="1"\} (\d+)', text, re.M)
    assert m and int(m.group(1)) > 0, "no nv_inference_request_success for box_embed in /metrics"
    s = stats(triton.http_url, "box_embed")
    assert s["inference_count"] > 0 and s["execution_count"] > 0, s
    after = s["inference_stats"]
    assert after["success"]["count"] > before["success"]["count"], (before["success"], after["success"])


def test_failed_requests_counted_as_failures(triton):
    # Monitoring must see errors: the backend reports a failed request with success=false.
    before = stats(triton.http_url, "box_embed")["inference_stats"]
    assert infer(triton.http_url, "box_embed", _bad("negative_num_dets").inputs(), OUTPUTS).status == 400
    after = stats(triton.http_url, "box_embed")["inference_stats"]
    assert after["fail"]["count"] > before["fail"]["count"], (before["fail"], after["fail"])
    assert after["success"]["count"] == before["success"]["count"], "a failed request counted as success"
