"""Faces: the face_detect stand-in (SCRFD-500M), face_align (the box_embed Rust backend in
face mode) with face_encoder (MobileFaceNet), and the face_embed ensemble, in the real
tritonserver; the detector's decoding/NMS helpers and the numpy alignment reference without
one.

Expected detections: ../shared/data/faces/coco_faces_scrfd500m.json (SCRFD-500M, score >= 0.6,
width >= 40 px, on 29 COCO photos). Expected embeddings: tests/face_reference.py (Umeyama via
SVD + float64 warp) encoded by onnxruntime on the same MobileFaceNet file.
"""
from __future__ import annotations

import json
import os
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, SOURCE_REPO, backend_built
from face_reference import ARCFACE_112, FaceEncoder, align, umeyama, warp
from kserve_http import infer

sys.path.insert(0, os.path.join(SOURCE_REPO, "face_detect", "1"))
import detection  # noqa: E402  (the IoU and NMS scrfd uses; linked into that folder)
import scrfd  # noqa: E402

SHARED = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared"))
PHOTOS = os.path.join(os.environ.get("COCO_SUBSET_DIR", os.path.join(SHARED, "data", "coco_val2017_subset")), "images")
FACE_LIST = os.path.join(SHARED, "data", "faces", "coco_faces_scrfd500m.json")
LIST_THRESHOLD, LIST_MIN_WIDTH = 0.6, 40.0  # how the list was made (its README)
DETECT_OUTPUTS = ["num_faces", "face_boxes", "face_scores", "face_landmarks"]
ALIGN_OUTPUTS = ["face_embeddings", "face_valid"]
MIN_COS = 0.999
NAN = float("nan")


@pytest.fixture(scope="session")
def face_encoder():
    return FaceEncoder(os.path.join(SOURCE_REPO, "face_encoder", "1", "model.onnx"))


@pytest.fixture(scope="session")
def face_align_ready(triton):
    if not backend_built():
        pytest.skip("box_embed backend not built: face_align (face mode) cannot load")
    return triton


def listed_faces() -> dict:
    with open(FACE_LIST) as f:
        return json.load(f)


def photo(name: str) -> np.ndarray:
    with Image.open(os.path.join(PHOTOS, name)) as im:
        return np.asarray(im.convert("RGB"))


def detect(triton, image: np.ndarray):
    r = infer(triton.http_url, "face_detect", {"original": image[None]}, DETECT_OUTPUTS)
    assert r.ok, r.error
    n = int(r.outputs["num_faces"][0, 0])
    return (r.outputs["face_boxes"][0, :n], r.outputs["face_scores"][0, :n], r.outputs["face_landmarks"][0, :n])


def embed(triton, image: np.ndarray, landmarks: np.ndarray, num_faces: int | None = None):
    landmarks = np.asarray(landmarks, np.float32).reshape(1, -1, 5, 2)
    n = landmarks.shape[1] if num_faces is None else num_faces
    return infer(triton.http_url, "face_align", {
        "original": image[None], "num_faces": np.array([[n]], np.int32), "face_landmarks": landmarks,
    }, ALIGN_OUTPUTS)


def reference_embeddings(image, landmarks, face_encoder) -> np.ndarray:
    if len(landmarks) == 0:
        return np.zeros((0, 128), np.float32)
    return face_encoder(np.stack([align(image, lm) for lm in landmarks]))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def unit(v: np.ndarray) -> np.ndarray:
    """face_encoder returns MobileFaceNet's raw output (l2_normalize false); the gateway normalises."""
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------
# Without a server: the detector's helpers and the alignment reference

def test_anchor_order_is_row_major_two_per_cell():
    centres = scrfd.anchor_centres(32, 8)
    assert centres.shape == (32, 2)
    assert centres[:6].tolist() == [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0]]
    assert centres[8].tolist() == [0, 8]


def test_decode_places_boxes_and_landmarks_around_their_anchor():
    size = 64
    outputs = {}
    for s in scrfd.STRIDES:
        n = (size // s) ** 2 * 2
        outputs[f"score_{s}"] = np.zeros((1, n, 1), np.float32)
        outputs[f"bbox_{s}"] = np.ones((1, n, 4), np.float32)
        outputs[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    # Stride 16, cell (x=2, y=1), its second anchor: index (1 * 4 + 2) * 2 + 1 = 13.
    outputs["score_16"][0, 13, 0] = 0.9
    outputs["bbox_16"][0, 13] = [0.5, 1.0, 1.5, 2.0]
    outputs["kps_16"][0, 13] = np.arange(10) / 10
    boxes, scores, landmarks = scrfd.decode(outputs, size, 0.5)
    assert scores.tolist() == pytest.approx([0.9])
    assert boxes[0].tolist() == pytest.approx([32 - 8, 16 - 16, 32 + 24, 16 + 32])
    assert np.allclose(landmarks[0], np.array([32, 16]) + (np.arange(10) / 10 * 16).reshape(5, 2))


def test_nms_keeps_best_and_separates_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    assert scrfd.nms(boxes, scores, 0.4, 10).tolist() == [1, 2]
    assert scrfd.nms(boxes, scores, 0.99, 10).tolist() == [1, 0, 2, 3]
    assert scrfd.nms(boxes, scores, 0.4, 1).tolist() == [1]
    assert scrfd.nms(boxes[:0], scores[:0], 0.4, 10).tolist() == []


def test_prepare_puts_the_photo_top_left_on_a_zero_canvas():
    image = np.full((100, 320, 3), 255, np.uint8)
    net, scale = scrfd.prepare(image, 640)
    assert scale == 2.0 and net.shape == (1, 3, 640, 640)
    assert np.allclose(net[0, :, :200, :], 127.5 / 128)
    assert np.all(net[0, :, 200:, :] == 0)
    tall = np.zeros((1280, 10, 3), np.uint8)
    assert scrfd.resize_scale(*tall.shape[:2], 640) == (0.5, 640, 5)


def test_umeyama_reference_recovers_a_similarity():
    angle, scale, t = 0.3, 1.9, np.array([40.0, -7.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_112 @ r.T + t
    m = umeyama(src, ARCFACE_112)
    assert np.allclose(m[:2, :2] @ src.T + m[:2, 2:3], ARCFACE_112.T, atol=1e-9)


def test_reference_warp_matches_opencv():
    """Pins the reference's pixel convention on OpenCV's warpAffine (which interpolates in
    1/32-pixel fixed point, hence the tolerance)."""
    image = photo("000000109313.jpg")
    m = umeyama(np.array([[150, 90], [175, 90], [163, 105], [152, 118], [173, 118]], float), ARCFACE_112)
    ours = warp(image, m, 112)
    theirs = cv2.warpAffine(image, m[:2], (112, 112), flags=cv2.INTER_LINEAR, borderValue=0)
    theirs = (theirs.astype(np.float64) - 127.5) / 127.5
    diff = np.abs(ours - theirs.transpose(2, 0, 1))
    print(f"\nreference vs cv2.warpAffine: mean |diff| {diff.mean():.5f}, max {diff.max():.4f} "
          "(normalised units, one 8-bit level = 0.0078)")
    assert diff.mean() < 0.005 and diff.max() < 0.1


# ---------------------------------------------------------------------------------------
# face_detect on the listed photos

def box_iou(a, b) -> float:
    return float(detection.box_iou(np.asarray(a, np.float32), np.asarray(b, np.float32)[None])[0])


def test_detector_finds_the_listed_faces(triton):
    worst_iou, worst_score, extra = 1.0, 0.0, []
    for name, faces in listed_faces().items():
        image = photo(name)
        boxes, scores, landmarks = detect(triton, image)
        assert np.all(np.diff(scores) <= 0), f"{name}: faces not best-first"
        # Greedy NMS lets no lower score suppress a higher one, so the detections at or
        # above the list's threshold are exactly those a detector at that threshold gives.
        kept = scores >= LIST_THRESHOLD
        boxes, scores, landmarks = boxes[kept], scores[kept], landmarks[kept]
        for score, *box in faces:
            ious = [box_iou(box, b) for b in boxes]
            assert ious, f"{name}: no face found, expected {box} ({score})"
            best = int(np.argmax(ious))
            assert ious[best] >= 0.9 and abs(scores[best] - score) <= 0.01, (
                f"{name}: expected {box} score {score}, "
                f"best match {boxes[best]} score {scores[best]} IoU {ious[best]:.3f}")
            worst_iou, worst_score = min(worst_iou, ious[best]), max(worst_score, abs(scores[best] - score))
            x1, y1, x2, y2 = boxes[best]
            lm = landmarks[best]
            assert np.all((lm[:, 0] >= x1 - 5) & (lm[:, 0] <= x2 + 5) & (lm[:, 1] >= y1 - 5) & (lm[:, 1] <= y2 + 5)), \
                f"{name}: landmarks {lm} outside their box {boxes[best]}"
        wide = boxes[:, 2] - boxes[:, 0] >= LIST_MIN_WIDTH
        extra += [(name, b) for b in boxes[wide] if max(box_iou(b, f[1:]) for f in faces) < 0.9]
    print(f"\n29 photos, {sum(map(len, listed_faces().values()))} listed faces: worst IoU {worst_iou:.4f}, "
          f"worst |score diff| {worst_score:.4f}, unlisted faces >= {LIST_MIN_WIDTH:.0f} px: {len(extra)}")
    assert not extra, f"faces the list does not have: {extra}"


def test_detector_on_a_blank_image_and_bad_input(triton):
    boxes, scores, landmarks = detect(triton, np.zeros((300, 200, 3), np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and landmarks.shape == (0, 5, 2)
    r = infer(triton.http_url, "face_detect", {"original": np.zeros((1, 10, 10, 3), np.float32)}, DETECT_OUTPUTS)
    assert r.status == 400 and "UINT8" in r.error, r.error


# ---------------------------------------------------------------------------------------
# face_align against the numpy reference

@pytest.fixture(scope="session")
def detected(triton):
    """Every listed photo with the faces face_detect finds in it (default threshold)."""
    return {name: (photo(name), *detect(triton, photo(name))) for name in listed_faces()}


def test_embeddings_match_the_reference(face_align_ready, detected, face_encoder):
    worst, count = 1.0, 0
    for name, (image, _boxes, _scores, landmarks) in detected.items():
        r = embed(face_align_ready, image, landmarks)
        assert r.ok, f"{name}: {r.error}"
        emb, valid = r.outputs["face_embeddings"][0], r.outputs["face_valid"][0]
        assert emb.shape == (len(landmarks), 128) and valid.all(), f"{name}: {emb.shape} {valid}"
        norms = np.linalg.norm(emb, axis=1)
        assert (norms > 2).all(), f"{name}: norms {norms}: face_encoder should return the unnormalised output"
        cos = cosines(emb, reference_embeddings(image, landmarks, face_encoder))
        worst, count = min(worst, cos.min()), count + len(cos)
        assert cos.min() >= MIN_COS, f"{name}: cosines {cos}"
    print(f"\nface_align vs numpy reference: {count} faces, min cosine {worst:.6f}")


def test_mirrored_face_is_similar_and_other_people_are_not(face_align_ready, detected):
    mirror_cos, own = [], []
    for name, (image, boxes, scores, landmarks) in detected.items():
        if not len(scores):
            continue
        r = embed(face_align_ready, image, landmarks[:1])
        assert r.ok, r.error
        flipped = np.ascontiguousarray(image[:, ::-1])
        f_boxes, _, f_landmarks = detect(face_align_ready, flipped)
        w = image.shape[1]
        mirrored_box = np.array([w - boxes[0, 2], boxes[0, 1], w - boxes[0, 0], boxes[0, 3]])
        ious = [box_iou(mirrored_box, b) for b in f_boxes]
        assert ious and max(ious) >= 0.6, f"{name}: mirrored face not found"
        f = embed(face_align_ready, flipped, f_landmarks[int(np.argmax(ious))][None])
        assert f.ok, f.error
        own.append(unit(r.outputs["face_embeddings"][0, 0]))
        mirror_cos.append(float(own[-1] @ unit(f.outputs["face_embeddings"][0, 0])))
    own = np.array(own)
    cross = own @ own.T
    others = cross[~np.eye(len(own), dtype=bool)]
    print(f"\nmirror cosine over {len(mirror_cos)} faces: min {min(mirror_cos):.3f} median {np.median(mirror_cos):.3f}"
          f" max {max(mirror_cos):.3f}; different photos: mean {others.mean():.3f} "
          f"p99 {np.percentile(others, 99):.3f} max {others.max():.3f}")
    # Measured: mirror min 0.458 (one small, turned face) median 0.899 max 0.970; different
    # photos mean 0.038, p99 0.401, max 0.592 (MODELS.md: mirror 0.91-0.98 on portraits).
    assert np.median(mirror_cos) >= 0.85 and np.mean(np.array(mirror_cos) >= 0.6) >= 0.9
    assert others.mean() < 0.15 and np.median(mirror_cos) > np.percentile(others, 99)


def test_degenerate_landmarks_invalidate_only_their_face(face_align_ready, detected, face_encoder):
    image, _, _, landmarks = detected["000000192699.jpg"]
    h, w = image.shape[:2]
    good = landmarks[:2]
    nan = good[0].copy()
    nan[2, 0] = NAN
    line = np.stack([np.linspace(100, 200, 5), np.linspace(50, 150, 5)], axis=1)
    coincident = np.full((5, 2), 120.0)
    outside = good[0] + np.array([3 * w, 0])
    rows = np.stack([good[0], nan, line, good[1], coincident, outside])
    r = embed(face_align_ready, image, rows)
    assert r.ok, r.error
    emb, valid = r.outputs["face_embeddings"][0], r.outputs["face_valid"][0]
    assert valid.tolist() == [True, False, False, True, False, False]
    assert np.all(emb[~valid] == 0)
    cos = cosines(emb[valid], reference_embeddings(image, good, face_encoder))
    assert cos.min() >= MIN_COS, cos


def test_more_faces_than_the_encoder_batch(face_align_ready, detected, face_encoder):
    """70 faces in one request: the face encoder takes at most 32 per call (3 chunks); one
    degenerate row in the middle must not shift the rows after it."""
    image, _, _, landmarks = detected["000000005001.jpg"]
    rng = np.random.default_rng(7)
    rows = np.concatenate([landmarks[i % len(landmarks)][None] + rng.normal(0, 0.7, (1, 5, 2))
                           for i in range(70)]).astype(np.float32)
    rows[40] = NAN
    r = embed(face_align_ready, image, rows)
    assert r.ok, r.error
    emb, valid = r.outputs["face_embeddings"][0], r.outputs["face_valid"][0]
    assert emb.shape == (70, 128) and valid.sum() == 69 and not valid[40]
    cos = cosines(emb[valid], reference_embeddings(image, rows[valid], face_encoder))
    assert cos.min() >= MIN_COS, cos.min()


def test_rows_follow_num_faces_and_zero_faces(face_align_ready, detected):
    image, _, _, landmarks = detected["000000005001.jpg"]
    r = embed(face_align_ready, image, landmarks[:3], num_faces=1)
    assert r.ok, r.error
    assert r.outputs["face_embeddings"].shape == (1, 1, 128)
    r = embed(face_align_ready, image, np.zeros((0, 5, 2), np.float32))
    assert r.ok, r.error
    assert r.outputs["face_embeddings"].shape == (1, 0, 128) and r.outputs["face_valid"].shape == (1, 0)


@pytest.mark.parametrize("kind, message", [
    ("too_many", "only 1 rows"), ("over_max", "max_faces"), ("negative", "negative"), ("shape", "face_landmarks"),
])
def test_bad_requests_name_the_problem(face_align_ready, kind, message):
    image = np.zeros((50, 60, 3), np.uint8)
    one = (ARCFACE_112[None] / 3).astype(np.float32)
    inputs = {"too_many": (one, 2), "over_max": (np.tile(one, (101, 1, 1)), 101), "negative": (one, -1)}
    if kind == "shape":
        r = infer(face_align_ready.http_url, "face_align", {
            "original": image[None], "num_faces": np.array([[1]], np.int32),
            "face_landmarks": np.zeros((1, 1, 4, 2), np.float32)}, ALIGN_OUTPUTS)
    else:
        rows, n = inputs[kind]
        r = embed(face_align_ready, image, rows, num_faces=n)
    assert r.status == 400 and message in r.error, (r.status, r.error)


# ---------------------------------------------------------------------------------------
# The face_embed ensemble, end to end from JPEG bytes

def test_face_embed_ensemble(triton, face_encoder):
    if "face_embed" not in triton.models:
        pytest.skip("face_embed not loaded: it needs target/release/libtriton_preprocess.so and "
                    "libtriton_box_embed.so (cargo build --release)")
    worst_iou, worst_score, worst_cos = 1.0, 0.0, 1.0
    for name, faces in listed_faces().items():
        with open(os.path.join(PHOTOS, name), "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
        r = infer(triton.http_url, "face_embed", {"image": data[None]}, DETECT_OUTPUTS + ALIGN_OUTPUTS + ["image_size"])
        assert r.ok, f"{name}: {r.error}"
        n = int(r.outputs["num_faces"][0, 0])
        boxes, scores = r.outputs["face_boxes"][0, :n], r.outputs["face_scores"][0, :n]
        landmarks = r.outputs["face_landmarks"][0, :n]
        emb, valid = r.outputs["face_embeddings"][0], r.outputs["face_valid"][0]
        assert emb.shape == (n, 128) and valid.all(), f"{name}: {emb.shape} {valid}"
        image = photo(name)
        assert r.outputs["image_size"][0].tolist() == list(image.shape[:2])
        for score, *box in faces:
            ious = [box_iou(box, b) for b in boxes]
            best = int(np.argmax(ious))
            worst_iou, worst_score = min(worst_iou, ious[best]), max(worst_score, abs(scores[best] - score))
            assert ious[best] >= 0.9 and abs(scores[best] - score) <= 0.01, \
                (name, box, score, boxes[best], scores[best])
        # Reference from the same landmarks on the PIL-decoded photo: any JPEG decoder
        # difference between preprocess and PIL shows up here.
        cos = cosines(emb, reference_embeddings(image, landmarks, face_encoder))
        worst_cos = min(worst_cos, cos.min())
        assert cos.min() >= MIN_COS, f"{name}: {cos}"
    print(f"\nface_embed: worst IoU {worst_iou:.4f}, worst |score diff| {worst_score:.4f}, min cosine {worst_cos:.6f}")
