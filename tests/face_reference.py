"""Independent numpy reference of face alignment (docs/faces.md), float64 throughout.

- `umeyama`: the general least-squares similarity of Umeyama (1991) via SVD, with his
  reflection correction -- not the 2-D closed form crop-core uses, so the two check each
  other.
- `warp`: cv2.warpAffine semantics with float coordinates: output pixel (u, v) samples the
  source at M^-1 (u, v), bilinear, each neighbour outside the image reads 0; then
  (x - 127.5) / 127.5, CHW.
- `FaceEncoder`: onnxruntime on the same MobileFaceNet file face_encoder serves, L2-normalised
  like the stand-in.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 similarity matrix taking src [N,2] onto dst [N,2] in the least-squares sense."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = src.shape[0]
    ms, md = src.mean(0), dst.mean(0)
    sc, dc = src - ms, dst - md
    cov = dc.T @ sc / n
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(cov)
    r = u @ np.diag(d) @ vt
    var = (sc ** 2).sum() / n
    scale = (s * d).sum() / var
    m = np.eye(3)
    m[:2, :2] = scale * r
    m[:2, 2] = md - scale * r @ ms
    return m


def warp(image: np.ndarray, forward: np.ndarray, size: int) -> np.ndarray:
    """UINT8 HWC image -> [3,size,size] aligned face, `forward` (3x3) maps image -> face."""
    inv = np.linalg.inv(forward)
    h, w = image.shape[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    x0, y0 = np.floor(x), np.floor(y)
    lx, ly = x - x0, y - y0
    src = image.astype(np.float64)
    acc = np.zeros((size, size, 3))
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                           (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = (y0 + dy).astype(np.int64), (x0 + dx).astype(np.int64)
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        pixels = src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        acc += np.where(inside[..., None], weight[..., None] * pixels, 0.0)
    return ((acc - 127.5) / 127.5).transpose(2, 0, 1)


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112, template=ARCFACE_112) -> np.ndarray:
    return warp(image, umeyama(landmarks, template * (size / 112.0)), size)


class FaceEncoder:
    """MobileFaceNet through onnxruntime: [N,3,112,112] -> [N,D], L2-normalised."""

    def __init__(self, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def raw(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(faces, np.float32)})[0]

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        e = self.raw(faces)
        return e / np.linalg.norm(e, axis=1, keepdims=True)
