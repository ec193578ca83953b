"""Input preparation, anchor decoding and NMS for the `face_detect` stand-in (SCRFD).

Plain numpy, no Triton imports, so tests import it directly. SCRFD-500M (bnkps) has three
heads, strides 8/16/32, two anchors per feature-map cell; per anchor it gives a sigmoid
score, box distances (left, top, right, bottom) and 5 keypoint offsets, all in stride units
from the anchor centre (MODELS.md section 4). Boxes and landmarks here are in the pixels of
the 640x640 network input until `detect` divides them by the resize scale. IoU and NMS come
from the detector's `detection.py` (linked into this folder).
"""
from __future__ import annotations

import numpy as np

from detection import nms as class_aware_nms

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


def resize_scale(height: int, width: int, size: int) -> tuple[float, int, int]:
    """Scale that fits an HxW image inside size x size keeping its aspect, and the resized
    (height, width) (at least 1 pixel each). Rounded like InsightFace's SCRFD: the long
    side becomes exactly `size`, the short side is truncated."""
    if height >= width:
        new_h, new_w = size, max(1, int(size * width / height))
        return new_h / height, new_h, new_w
    new_w, new_h = size, max(1, int(size * height / width))
    return new_w / width, new_h, new_w


def resize_bilinear_hwc(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Bilinear resize of an HWC image with cv2.INTER_LINEAR's pixel-centre convention
    (source = (dst + 0.5) * in/out - 0.5, clamped to the edge), as float32."""
    def taps(n_in: int, n_out: int):
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    h, w = image.shape[:2]
    src = image.astype(np.float32)
    if (h, w) == (new_h, new_w):
        return src
    ylo, yhi, wy = taps(h, new_h)
    xlo, xhi, wx = taps(w, new_w)
    rows = src[ylo] * (1 - wy)[:, None, None] + src[yhi] * wy[:, None, None]
    return rows[:, xlo] * (1 - wx)[None, :, None] + rows[:, xhi] * wx[None, :, None]


def prepare(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """UINT8 RGB [H,W,3] -> network input [1,3,size,size] ((x-127.5)/128, the resized photo
    at the top-left of a zero canvas) and the scale from original to network pixels."""
    h, w = image.shape[:2]
    scale, new_h, new_w = resize_scale(h, w, size)
    canvas = np.zeros((size, size, 3), np.float32)
    # The pad is zero in network units, as in InsightFace: it normalises the resized photo
    # only, so the canvas outside it stays 0 (not (0 - 127.5) / 128).
    canvas[:new_h, :new_w] = (resize_bilinear_hwc(image, new_h, new_w) - 127.5) / 128.0
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), scale


def anchor_centres(size: int, stride: int) -> np.ndarray:
    """Anchor centres [N,2] (x, y) in network pixels for one stride, in the head's order:
    cells row-major (y outer, x inner), each cell's anchors consecutive."""
    n = size // stride
    gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32) * stride
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)


def decode(outputs: dict[str, np.ndarray], size: int, score_threshold: float):
    """Raw head outputs `score_s`, `bbox_s`, `kps_s` ([1,N,1], [1,N,4], [1,N,10]) ->
    (boxes [M,4], scores [M], landmarks [M,5,2]) of the anchors at or above the threshold,
    in network pixels."""
    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        score = outputs[f"score_{stride}"].reshape(-1)
        distance = outputs[f"bbox_{stride}"].reshape(-1, 4) * stride
        offsets = outputs[f"kps_{stride}"].reshape(-1, 5, 2) * stride
        centres = anchor_centres(size, stride)
        if centres.shape[0] != score.shape[0]:
            raise ValueError(f"stride {stride}: {score.shape[0]} scores, {centres.shape[0]} anchors for input {size}")
        keep = score >= score_threshold
        c = centres[keep]
        d = distance[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        landmarks.append(c[:, None, :] + offsets[keep])
        scores.append(score[keep])
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
            np.concatenate(landmarks).astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_faces: int) -> np.ndarray:
    """Greedy NMS over one class: indices of kept boxes, best score first, at most max_faces."""
    return class_aware_nms(boxes, scores, np.zeros(len(scores), np.int32), iou_threshold, max_faces)


def detect(run, image: np.ndarray, size: int, score_threshold: float, iou_threshold: float, max_faces: int):
    """Whole detector on one UINT8 RGB [H,W,3] image; `run(input) -> {name: array}` runs
    the network. Returns (boxes [K,4], scores [K], landmarks [K,5,2]) in image pixels,
    best score first."""
    net_input, scale = prepare(image, size)
    boxes, scores, landmarks = decode(run(net_input), size, score_threshold)
    keep = nms(boxes, scores, iou_threshold, max_faces)
    return boxes[keep] / scale, scores[keep], landmarks[keep] / scale
