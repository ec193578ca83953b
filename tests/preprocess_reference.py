"""The preprocess stage written with the libraries it imitates: PIL decodes and applies
EXIF orientation, OpenCV resizes the YOLO letterbox (Ultralytics' LetterBox), PIL's
BILINEAR resize plus torchvision's size and centre-crop rules make the CLIP input, PIL
caps the original. docs/preprocess.md states the tolerance the backend must meet.

Only numpy, PIL and opencv-python-headless: no torch, no ultralytics.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Sizes:
    yolo_size: int = 640
    clip_size: int = 256
    pad_value: int = 114
    original_max_side: int = 1920


def decode(data: bytes) -> np.ndarray:
    """RGB uint8 [H, W, 3] after EXIF orientation; alpha dropped, grey replicated, CMYK converted."""
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"))


def planar(img: np.ndarray) -> np.ndarray:
    """HWC uint8 -> CHW float32 / 255."""
    return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)


def letterbox_geometry(h: int, w: int, size: int) -> tuple[float, int, int, int, int]:
    """Ultralytics LetterBox(auto=False, scaleup=True, center=True): r, new_w, new_h, left, top.
    A side that would round to 0 is kept at 1 pixel (Ultralytics would fail there)."""
    r = min(size / h, size / w)
    new_w, new_h = max(1, int(round(w * r))), max(1, int(round(h * r)))
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    return r, new_w, new_h, int(round(dw - 0.1)), int(round(dh - 0.1))


def letterbox(img: np.ndarray, size: int, pad_value: int) -> np.ndarray:
    h, w = img.shape[:2]
    _, new_w, new_h, left, top = letterbox_geometry(h, w, size)
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    right, bottom = size - new_w - left, size - new_h - top
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return planar(img)


def clip_input(img: np.ndarray, size: int) -> np.ndarray:
    """torchvision Resize(size) on a PIL image (PIL BILINEAR, antialiased) + CenterCrop(size)."""
    h, w = img.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    pil = Image.fromarray(img)
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return planar(np.asarray(pil)[top:top + size, left:left + size])


def capped_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """(height, width) of the original output: longest side max_side, the other rounded."""
    longest = max(h, w)
    if longest <= max_side:
        return h, w
    scale = max_side / longest
    side = lambda s: min(max_side, max(1, int(round(s * scale))))  # noqa: E731
    return (side(h), max_side) if w >= h else (max_side, side(w))


def original(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = capped_size(h, w, max_side)
    if (ch, cw) == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((cw, ch), Image.BILINEAR))


def letterbox_transform(h: int, w: int, original_shape: tuple[int, int], size: int) -> np.ndarray:
    """(scale, pad_x, pad_y) with letterbox_px = original_px * scale + pad: the pads are where the
    photo sits (left, top), the scale maps the original tensor's longest side onto the letterbox's."""
    _, new_w, new_h, left, top = letterbox_geometry(h, w, size)
    scale = max(new_w, new_h) / max(original_shape)
    return np.array([scale, left, top], dtype=np.float32)


def preprocess_pixels(img: np.ndarray, sizes: Sizes = Sizes()) -> dict:
    h, w = img.shape[:2]
    orig = original(img, sizes.original_max_side)
    return {
        "yolo_input": letterbox(img, sizes.yolo_size, sizes.pad_value),
        "clip_input": clip_input(img, sizes.clip_size),
        "original": orig,
        "letterbox": letterbox_transform(h, w, orig.shape[:2], sizes.yolo_size),
        "image_size": np.array([h, w], dtype=np.int32),
    }


def preprocess(data: bytes, sizes: Sizes = Sizes()) -> dict:
    return preprocess_pixels(decode(data), sizes)
