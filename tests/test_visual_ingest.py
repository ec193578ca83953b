"""The `visual_ingest` ensemble (preprocess -> yolo || clip_image -> box_embed) in the real
tritonserver, on the annotated COCO photos.

The ensemble is loaded through the repository API by this module (a failed load then
fails these tests, not the whole session). Its parts are checked against independent
references: detections against the COCO annotations, box embeddings against the numpy
crop reference on the decoded original, the global embedding against the reference
preprocessing (tests/preprocess_reference.py) through the same encoder.
"""
from __future__ import annotations

import concurrent.futures
import os

import numpy as np
import pytest
import requests

from coco_detection import PrecisionRecall, coco_truth, photo_bytes
from conftest import crop_params
from crop_reference import reference
from kserve_http import infer
from preprocess_reference import clip_input, decode
from serverctl.triton import BACKEND_SO, rust_backend_so
from test_yolo import FLOORS

OUTPUTS = ["num_dets", "boxes", "scores", "classes", "embedding", "box_embeddings", "box_valid"]
PREPROCESS_OUTPUTS = ["yolo_input", "clip_input", "original", "letterbox", "image_size"]
YOLO_OUTPUTS = ["num_dets", "det_boxes", "det_scores", "det_classes"]
COMPOSING = ["preprocess", "yolo", "clip_image", "box_embed"]
MIN_COS = 0.9999
# Cosine of the ensemble's global embedding with the encoder on the reference
# preprocessing: the two decoders and resizers differ by a few grey levels (docs/preprocess.md);
# measured >= 0.99996 on the sampled photos.
MIN_COS_REFERENCE_PREPROCESSING = 0.9999
SAMPLE = 12  # photos for the embedding checks, spread over the annotated set


@pytest.fixture(scope="module")
def url(triton):
    missing = [p for p in (rust_backend_so("preprocess"), BACKEND_SO) if not os.path.exists(p)]
    if missing:
        pytest.skip(f"!!! visual_ingest tests NOT RUN: {', '.join(missing)} not built "
                    f"(cargo build --release --workspace) !!!")
    absent = [m for m in COMPOSING if m not in triton.models]
    assert not absent, f"composing models not loaded by the session server: {absent}"
    r = requests.post(f"{triton.http_url}/v2/repository/models/visual_ingest/load", timeout=300)
    assert r.status_code == 200, f"loading visual_ingest failed: {r.status_code} {r.text}"
    return triton.http_url


def ingest(url: str, data: bytes):
    return infer(url, "visual_ingest", {"image": np.frombuffer(data, np.uint8)[None, :]}, OUTPUTS)


def first(result) -> dict:
    assert result.ok, result.error
    return {k: v[0] for k, v in result.outputs.items()}


def sample_ids() -> list[int]:
    ids = sorted(coco_truth())
    return ids[:: len(ids) // SAMPLE][:SAMPLE]


def test_detections_reach_the_yolo_floor(url):
    truth = coco_truth()

    def one(image_id):
        return image_id, first(ingest(url, photo_bytes(truth[image_id].file_name)))

    pr = PrecisionRecall()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for image_id, out in pool.map(one, truth):
            n = int(out["num_dets"][0])
            assert out["boxes"].shape == (n, 4) and out["box_embeddings"].shape[0] == n
            assert out["box_valid"].shape == (n,) and out["scores"].shape[0] >= n
            pr.add(image_id, truth[image_id], out["boxes"], out["scores"][:n], out["classes"][:n])
    print(f"\nvisual_ingest detections: {pr.summary()}")
    min_p, min_r = FLOORS["yolo"]
    assert pr.precision >= min_p and pr.recall >= min_r, f"{pr.summary()}; floors P {min_p} R {min_r}"


@pytest.mark.parametrize("image_id", sample_ids())
def test_ensemble_equals_its_parts_and_the_crop_reference(url, image_id, encoder, box_config):
    data = photo_bytes(coco_truth()[image_id].file_name)
    out = first(ingest(url, data))
    pre = first(infer(url, "preprocess", {"image": np.frombuffer(data, np.uint8)[None, :]}, PREPROCESS_OUTPUTS))
    det = first(infer(url, "yolo", {"images": pre["yolo_input"][None]}, YOLO_OUTPUTS))
    n = int(det["num_dets"][0])
    assert n > 0, "photo without detections checks nothing"

    # Detections: the ensemble runs exactly the yolo model on preprocess's output.
    assert int(out["num_dets"][0]) == n
    np.testing.assert_array_equal(out["scores"][:n], det["det_scores"][:n])
    np.testing.assert_array_equal(out["classes"][:n], det["det_classes"][:n])

    # Boxes in photo pixels: letterbox pixels mapped back and clamped (originals here are
    # below the cap, so photo pixels are original pixels).
    original = pre["original"]
    h, w = original.shape[:2]
    assert pre["image_size"].tolist() == [h, w]
    scale, pad_x, pad_y = (float(v) for v in pre["letterbox"])
    mapped = (det["det_boxes"][:n].astype(np.float64) - [pad_x, pad_y, pad_x, pad_y]) / scale
    mapped = np.clip(mapped, 0, [w, h, w, h])
    np.testing.assert_allclose(out["boxes"], mapped, atol=1e-3)

    # Box embeddings: the crop reference on the decoded original, same encoder.
    want, want_valid = reference(original, det["det_boxes"], n, pre["letterbox"], crop_params(box_config), encoder)
    np.testing.assert_array_equal(out["box_valid"], want_valid)
    got = out["box_embeddings"]
    cos = np.sum(got[want_valid] * want[want_valid], axis=1)
    assert cos.size and cos.min() >= MIN_COS, f"box embedding cosines {np.sort(cos)[:5]}"
    assert not got[~want_valid].any()

    # Global embedding: exactly the encoder on preprocess's clip_input ...
    served = encoder(pre["clip_input"][None])[0]
    assert float(served @ out["embedding"]) >= MIN_COS
    # ... and close to the encoder on the reference preprocessing of the same bytes.
    ref = encoder(clip_input(decode(data), pre["clip_input"].shape[-1])[None])[0]
    cos_ref = float(ref @ out["embedding"])
    print(f"\nimage {image_id}: global embedding vs reference preprocessing cos {cos_ref:.6f}")
    assert cos_ref >= MIN_COS_REFERENCE_PREPROCESSING


def test_corrupt_image_fails_alone(url):
    good = photo_bytes(coco_truth()[139].file_name)
    cases = {
        "good": (good, None),
        "truncated": (good[: len(good) // 3], "truncated"),
        "not an image": (b"plain text, no picture here" * 10, "not a JPEG, PNG or WebP"),
        "JPEG signature then noise": (good[:2] + bytes(range(256)) * 8, "JPEG"),
        "good again": (good, None),
    }
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(ingest, url, data) for name, (data, _) in cases.items()}
        results = {name: f.result() for name, f in futures.items()}
    for name, (_, words) in cases.items():
        r = results[name]
        if words is None:
            assert r.ok, f"{name}: {r.error}"
            assert int(r.outputs["num_dets"][0, 0]) > 0
        else:
            assert r.status == 400 and words in r.error, f"{name}: HTTP {r.status} {r.error}"
    assert ingest(url, good).ok, "server stopped serving after corrupt images"
    alone = ingest(url, b"plain text, no picture here")
    print(f"\nlone corrupt request: HTTP {alone.status} {alone.error}")
    assert alone.status == 400
