"""Independent numpy reference of the box_embed crop semantics (docs/crop-semantics.md).

Written from the spec text, not from the Rust code, in float64. Axis-aligned ROI-align
is separable: validity, the pad mask and the bilinear weights all factor into a row
part and a column part, so each crop is Wy @ image @ Wx^T with per-axis weight
matrices. That is exact (same sums as the per-sample formula), just faster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRETCH, PAD, CONTEXT = "stretch", "pad", "context"


@dataclass(frozen=True)
class CropParams:
    policy: str = STRETCH
    crop_size: int = 256
    sampling_ratio: int = 2
    context_scale: float = 1.25
    min_box_size: float = 1.0


def map_and_check(box_lb, letterbox, width: int, height: int, params: CropParams):
    """Steps 1-3: original-pixel box clamped to the image, or None when rejected."""
    scale, px, py = (float(v) for v in letterbox)
    x1, y1, x2, y2 = (float(v) for v in box_lb)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, scale, px, py)):
        return None
    with np.errstate(all="ignore"):  # scale 0 gives inf/nan here, rejected just below
        mapped = ((np.array([x1, y1, x2, y2]) - np.array([px, py, px, py])) / np.float64(scale)).tolist()
    if not all(math.isfinite(v) for v in mapped):
        return None
    x1, y1, x2, y2 = mapped
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 - x1 < params.min_box_size or y2 - y1 < params.min_box_size:
        return None
    return x1, y1, x2, y2


def roi_and_mask(box, params: CropParams):
    """Step 4: sampling ROI and optional mask box for the crop policy."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if params.policy == STRETCH:
        return box, None
    if params.policy == PAD:
        half = max(w, h) / 2
        return (cx - half, cy - half, cx + half, cy + half), box
    if params.policy == CONTEXT:
        half = max(w, h) * params.context_scale / 2
        return (cx - half, cy - half, cx + half, cy + half), None
    raise ValueError(f"unknown crop policy {params.policy}")


def axis_weights(lo: float, hi: float, size: int, params: CropParams, mask=None) -> np.ndarray:
    """[S, size] matrix: output cell -> averaged bilinear weights of the source pixels on one axis."""
    S, s = params.crop_size, params.sampling_ratio
    bin_sz = (hi - lo) / S
    o = np.arange(S, dtype=np.float64)[:, None]
    i = np.arange(s, dtype=np.float64)[None, :]
    coord = (lo - 0.5) + o * bin_sz + (i + 0.5) * bin_sz / s  # [S, s]
    valid = ~((coord < -1.0) | (coord > size))
    if mask is not None:
        c = coord + 0.5
        valid &= (mask[0] <= c) & (c <= mask[1])
    c = np.maximum(coord, 0.0)
    low = np.floor(c)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    c = np.where(at_end, low, c)
    frac = c - low
    weight = valid / s
    rows = np.broadcast_to(np.arange(S)[:, None], coord.shape)
    W = np.zeros((S, size), dtype=np.float64)
    np.add.at(W, (rows, low.astype(np.int64)), (1.0 - frac) * weight)
    np.add.at(W, (rows, high.astype(np.int64)), frac * weight)
    return W


def crop(image: np.ndarray, box, params: CropParams) -> np.ndarray:
    """Step 5-6: FP32 [3,S,S] crop in [0,1] for an accepted (clamped) box."""
    H, W = image.shape[:2]
    (rx1, ry1, rx2, ry2), mask = roi_and_mask(box, params)
    wy = axis_weights(ry1, ry2, H, params, None if mask is None else (mask[1], mask[3]))
    wx = axis_weights(rx1, rx2, W, params, None if mask is None else (mask[0], mask[2]))
    # Only rows/columns with some weight matter; slicing keeps big images cheap.
    ys = np.flatnonzero(wy.any(axis=0))
    xs = np.flatnonzero(wx.any(axis=0))
    S = params.crop_size
    if ys.size == 0 or xs.size == 0:
        return np.zeros((3, S, S), dtype=np.float32)
    y0, y1 = ys[0], ys[-1] + 1
    x0, x1 = xs[0], xs[-1] + 1
    patch = image[y0:y1, x0:x1].astype(np.float64)  # [h, w, 3]
    tmp = np.tensordot(wy[:, y0:y1], patch, axes=(1, 0))  # [S, w, 3]
    out = np.tensordot(tmp, wx[:, x0:x1], axes=(1, 1))  # [S, 3, S]
    return (out.transpose(1, 0, 2) / 255.0).astype(np.float32)


def reference(image: np.ndarray, boxes_lb: np.ndarray, num_dets: int, letterbox: np.ndarray,
              params: CropParams, encode) -> tuple[np.ndarray, np.ndarray]:
    """Expected (embeddings [num_dets, D], valid [num_dets]); encode maps [N,3,S,S] -> [N,D]."""
    H, W = image.shape[:2]
    valid = np.zeros(num_dets, dtype=bool)
    crops = []
    for k in range(num_dets):
        box = map_and_check(boxes_lb[k], letterbox, W, H, params)
        if box is not None:
            valid[k] = True
            crops.append(crop(image, box, params))
    emb = None
    if crops:
        emb = encode(np.stack(crops))
    dim = emb.shape[1] if emb is not None else encode.dim
    out = np.zeros((num_dets, dim), dtype=np.float32)
    if emb is not None:
        out[valid] = emb
    return out, valid
