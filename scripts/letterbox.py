"""The YOLO letterbox as the box inputs of box_embed use it: a photo's boxes in letterbox pixels.

Shared by the tests and the benchmarks (both put scripts/ on sys.path), which build
box_embed requests from COCO annotations in original pixels.
"""
from __future__ import annotations

import numpy as np


def yolo_letterbox(width: int, height: int, target: int = 640) -> np.ndarray:
    """(scale, pad_x, pad_y) of a YOLO-style letterbox fit of a WxH image into target^2."""
    r = min(target / width, target / height)
    new_w, new_h = round(width * r), round(height * r)
    return np.array([r, (target - new_w) / 2, (target - new_h) / 2], dtype=np.float32)


def to_letterbox(boxes_xyxy: np.ndarray, letterbox: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) in original pixels -> the same boxes in letterbox pixels."""
    scale, px, py = (float(v) for v in letterbox)
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = b * scale + np.array([px, py, px, py])
    return out.astype(np.float32)
