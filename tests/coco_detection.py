"""COCO ground truth of the annotated subset and class-aware precision/recall at IoU 0.5,
shared by the detector tests (tests/test_yolo.py) and the ingest ensemble tests.

Matching follows COCO's rules in a simplified form: detections in descending score order
each take the unmatched same-class annotation of highest IoU if it reaches the threshold;
a detection matched to an iscrowd annotation counts neither as a hit nor as a false
positive, and crowd annotations are not counted as objects to find.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT

COCO_DIR = os.environ.get("COCO_SUBSET_DIR", os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "coco_val2017_subset")))
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Truth:
    file_name: str
    boxes: np.ndarray  # [G,4] x1,y1,x2,y2 image pixels
    classes: np.ndarray  # [G] COCO-80 index
    crowd: np.ndarray  # [G] bool


@lru_cache(maxsize=None)
def coco_truth() -> dict[int, Truth]:
    """image id -> Truth for every image that has annotations; the 80 category ids in
    ascending order become the indices 0..79 the detectors use."""
    path = os.path.join(COCO_DIR, "instances_val2017_subset.json")
    if not os.path.exists(path):
        pytest.fail(f"COCO subset not found at {COCO_DIR} (expected ../shared beside the repo; "
                    f"set COCO_SUBSET_DIR to point elsewhere)")
    with open(path) as f:
        data = json.load(f)
    index = {cid: i for i, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    assert len(index) == 80
    per_image: dict = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        per_image.setdefault(a["image_id"], []).append((x, y, x + w, y + h, index[a["category_id"]], a["iscrowd"]))
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = {}
    for image_id, rows in sorted(per_image.items()):
        r = np.array(rows, np.float64)
        out[image_id] = Truth(files[image_id], r[:, :4], r[:, 4].astype(np.int64), r[:, 5] == 1)
    return out


@lru_cache(maxsize=None)
def photo_bytes(file_name: str) -> bytes:
    with open(os.path.join(COCO_DIR, "images", file_name), "rb") as f:
        return f.read()


def load_photo(file_name: str) -> np.ndarray:
    with Image.open(os.path.join(COCO_DIR, "images", file_name)) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class PrecisionRecall:
    hits: int = 0
    false_positives: int = 0
    objects: int = 0
    images: int = 0
    per_image: dict = field(default_factory=dict)

    def add(self, image_id: int, truth: Truth, boxes, scores, classes) -> None:
        """Score one image's detections (boxes in image pixels)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        order = np.argsort(-np.asarray(scores), kind="stable")
        ious = iou_matrix(boxes, truth.boxes)
        taken = np.zeros(len(truth.classes), bool)
        hits = false_positives = 0
        for d in order:
            candidates = np.where((truth.classes == classes[d]) & ~taken, ious[d], -1.0)
            best = int(np.argmax(candidates)) if candidates.size else -1
            if best >= 0 and candidates[best] >= IOU_THRESHOLD:
                # A crowd region may absorb any number of detections, as in COCO.
                taken[best] = not truth.crowd[best]
                hits += not truth.crowd[best]
            else:
                false_positives += 1
        self.hits += hits
        self.false_positives += false_positives
        self.objects += int((~truth.crowd).sum())
        self.images += 1
        self.per_image[image_id] = (hits, false_positives)

    @property
    def precision(self) -> float:
        return self.hits / max(1, self.hits + self.false_positives)

    @property
    def recall(self) -> float:
        return self.hits / max(1, self.objects)

    def summary(self) -> str:
        return (f"precision {self.precision:.3f} recall {self.recall:.3f} at IoU {IOU_THRESHOLD} "
                f"({self.hits} hits, {self.false_positives} false positives, {self.objects} objects, "
                f"{self.images} images)")
