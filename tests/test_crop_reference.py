"""The separable numpy reference must equal a literal, per-sample reading of docs/crop-semantics.md.

Both are test code; this guards the fast one (used for every expected embedding) against
algebra mistakes, with small crops so the literal loops stay quick. No server needed.
"""
import math

import numpy as np
import pytest

from crop_reference import CONTEXT, PAD, STRETCH, CropParams, crop, map_and_check, roi_and_mask
from letterbox import yolo_letterbox


def literal_crop(image, box, params):
    H, W = image.shape[:2]
    S, s = params.crop_size, params.sampling_ratio
    (rx1, ry1, rx2, ry2), mask = roi_and_mask(box, params)
    bin_w, bin_h = (rx2 - rx1) / S, (ry2 - ry1) / S
    out = np.zeros((3, S, S))
    img = image.astype(np.float64)

    def bilinear(y, x):
        if y < -1 or y > H or x < -1 or x > W:
            return np.zeros(3)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = math.floor(y), math.floor(x)
        if y_low >= H - 1:
            y_low = y_high = H - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= W - 1:
            x_low = x_high = W - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * img[y_low, x_low] + hy * lx * img[y_low, x_high]
                + ly * hx * img[y_high, x_low] + ly * lx * img[y_high, x_high])

    for oy in range(S):
        for ox in range(S):
            acc = np.zeros(3)
            for iy in range(s):
                for ix in range(s):
                    y = ry1 - 0.5 + oy * bin_h + (iy + 0.5) * bin_h / s
                    x = rx1 - 0.5 + ox * bin_w + (ix + 0.5) * bin_w / s
                    if mask is not None and not (mask[0] <= x + 0.5 <= mask[2] and mask[1] <= y + 0.5 <= mask[3]):
                        continue
                    acc += bilinear(y, x)
            out[:, oy, ox] = acc / (s * s) / 255.0
    return out


@pytest.mark.parametrize("policy", [STRETCH, PAD, CONTEXT])
@pytest.mark.parametrize("sampling", [1, 2, 3])
def test_separable_reference_matches_literal_spec(policy, sampling):
    rng = np.random.RandomState(1)
    H, W = 23, 31
    image = rng.randint(0, 256, size=(H, W, 3)).astype(np.uint8)
    params = CropParams(policy=policy, crop_size=8, sampling_ratio=sampling, context_scale=1.5)
    boxes = [(2.0, 3.0, 20.0, 9.0), (0.0, 0.0, 31.0, 23.0), (25.3, 1.2, 31.0, 22.7),
             (10.5, 18.25, 12.0, 23.0), (0.0, 10.0, 3.0, 14.0)]
    for box in boxes:
        fast = crop(image, box, params)
        slow = literal_crop(image, box, params)
        assert fast.shape == (3, 8, 8)
        np.testing.assert_allclose(fast, slow, atol=1e-6, err_msg=f"box {box}")
    # Context/pad ROIs near the border do sample outside the image: make sure the test saw it.
    assert any(roi_and_mask(b, params)[0][0] < 0 for b in boxes) or policy == STRETCH


def test_box_rejection_rules():
    p = CropParams(min_box_size=1.0)
    lb = np.array([0.5, 10.0, 20.0], np.float32)  # scale, pad_x, pad_y
    ok = map_and_check([10, 20, 30, 40], lb, 100, 100, p)
    assert ok == pytest.approx((0.0, 0.0, 40.0, 40.0))
    assert map_and_check([10, 20, 10, 40], lb, 100, 100, p) is None  # zero width
    assert map_and_check([30, 20, 10, 40], lb, 100, 100, p) is None  # inverted
    assert map_and_check([float("nan"), 20, 30, 40], lb, 100, 100, p) is None
    assert map_and_check([10, 20, float("inf"), 40], lb, 100, 100, p) is None
    assert map_and_check([200, 20, 300, 40], lb, 100, 100, p) is None  # right of the image
    assert map_and_check([10, 20, 10.4, 40], lb, 100, 100, p) is None  # 0.8 px wide after mapping
    assert map_and_check([-50, 0, 30, 90], lb, 100, 100, p) == pytest.approx((0.0, 0.0, 40.0, 100.0))  # clamped
    assert map_and_check([10, 20, 30, 40], np.array([0, 0, 0], np.float32), 100, 100, p) is None


def test_yolo_letterbox():
    np.testing.assert_allclose(yolo_letterbox(640, 426), [1.0, 0.0, 107.0])
    np.testing.assert_allclose(yolo_letterbox(300, 600), [640 / 600, 160.0, 0.0], rtol=1e-6)
