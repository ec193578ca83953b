"""Decoding, class-aware NMS and input adaptation for the `yolo` stand-in detector.

Plain numpy, no Triton imports, so tests can import it directly. Boxes are x1,y1,x2,y2
in the pixels of the network input the raw output refers to.
"""
from __future__ import annotations

import numpy as np

YOLOX_STRIDES = (8, 16, 32)


def decode_yolov8(raw: np.ndarray, score_threshold: float):
    """Ultralytics YOLOv8 head [4 + C, N] (cx, cy, w, h, C sigmoid class scores; no
    objectness) -> (boxes [M,4], scores [M], classes [M]) for anchors whose best class
    reaches the threshold. One class per anchor, as Ultralytics does without multi_label."""
    classes = np.argmax(raw[4:], axis=0)
    scores = raw[4:][classes, np.arange(raw.shape[1])]
    keep = scores >= score_threshold
    cx, cy, w, h = raw[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), scores[keep].astype(np.float32), classes[keep].astype(np.int32)


def yolox_grid(size: int, strides=YOLOX_STRIDES):
    """Cell offsets [N,2] (gx, gy) and strides [N] in the anchor order of the YOLOX export:
    stride by stride, row-major (gy outer, gx inner) within each."""
    cells, steps = [], []
    for s in strides:
        n = size // s
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        steps.append(np.full(n * n, s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode_yolox(raw: np.ndarray, grid: np.ndarray, strides: np.ndarray, score_threshold: float):
    """YOLOX head [N, 5 + C] (x, y, log w, log h raw; objectness and C class scores
    already sigmoid) -> (boxes, scores, classes); score = objectness * best class."""
    if raw.shape[0] != grid.shape[0]:
        raise ValueError(f"YOLOX output has {raw.shape[0]} anchors, the grid {grid.shape[0]}")
    cls = raw[:, 5:] * raw[:, 4:5]
    classes = np.argmax(cls, axis=1)
    scores = cls[np.arange(cls.shape[0]), classes]
    keep = scores >= score_threshold
    r, g, s = raw[keep], grid[keep], strides[keep, None]
    centre = (r[:, :2] + g) * s
    size = np.exp(r[:, 2:4]) * s
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return boxes.astype(np.float32), scores[keep].astype(np.float32), classes[keep].astype(np.int32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] against boxes [M,4]; zero-area pairs give 0, not NaN."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int) -> np.ndarray:
    """Greedy class-aware NMS: indices of the kept boxes, best score first, at most
    max_detections. A box suppresses only boxes of its own class whose IoU with it is
    above the threshold. Each step is one vectorised IoU against the remaining
    candidates, and the loop stops once max_detections are kept."""
    order = np.argsort(-scores, kind="stable")
    if order.size == 0 or max_detections <= 0:
        return order[:0]
    # Shifting each class to its own region of the plane makes boxes of different
    # classes disjoint, so one class-agnostic pass is class-aware.
    b = boxes[order].astype(np.float64)
    span = float(np.abs(b).max()) + 1.0
    b = b + (classes[order].astype(np.float64) * 2 * span)[:, None]
    keep = []
    remaining = np.arange(order.size)
    while remaining.size and len(keep) < max_detections:
        best = remaining[0]
        keep.append(best)
        rest = remaining[1:]
        remaining = rest[box_iou(b[best], b[rest]) <= iou_threshold]
    return order[np.array(keep, dtype=np.int64)]


def resize_bilinear(image: np.ndarray, out_size: int) -> np.ndarray:
    """Bilinear resize of a square CHW image to out_size^2 with pixel-centre alignment
    (cv2.INTER_LINEAR's convention: source = (dst + 0.5) / scale - 0.5, clamped to the
    edge), done as two gathers with two weights per axis."""
    in_size = image.shape[-1]
    pos = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    pos = np.clip(pos, 0, in_size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    w = (pos - lo).astype(np.float32)
    rows = image[:, lo, :] * (1 - w)[None, :, None] + image[:, hi, :] * w[None, :, None]
    return rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]


def to_yolox_input(image: np.ndarray, size: int) -> np.ndarray:
    """Centred-letterbox RGB /255 [3,S,S] -> YOLOX input [3,size,size] BGR 0..255.

    YOLOX-Nano was trained on images resized with r = min(size/w, size/h), pasted at the
    top-left of a size^2 canvas of 114. Rescaling the whole S^2 canvas by size/S gives the
    photo at exactly that scale (size/S * min(S/w, S/h) = r) and keeps the grey 114 pad,
    only centred instead of top-left. Two things differ from YOLOX's own preprocessing:
    the photo is resampled twice (photo -> S, S -> size), and it sits shifted by the pad;
    the convolutional detector is translation-equivariant up to its stride grid, so the
    shift moves the boxes with the content. Boxes divided by size/S are then in the S
    letterbox pixels the contract asks for."""
    resized = resize_bilinear(image, size) if image.shape[-1] != size else image
    return np.ascontiguousarray(resized[::-1] * 255.0, dtype=np.float32)
