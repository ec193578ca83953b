"""The `preprocess` backend through the real server, against tests/preprocess_reference.py.

Tolerances (stated in docs/preprocess.md), on /255 values:
- same decoded pixels (PNG, WebP lossless): letterbox and CLIP inputs within 1/255 max,
  0.0015 mean (fixed-point rounding of the resamplers); `original` within 1/255 where the
  cap resized it, equal where it did not;
- JPEG, where the decoders differ (zune-jpeg vs PIL's libjpeg-turbo: IDCT, chroma
  upsampling, CMYK conversion): max 6/255, mean 0.002 on every output;
- `letterbox` within 1e-6 and `image_size` exactly.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import shutil
import struct
import threading
import zlib

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from kserve_http import infer
from preprocess_reference import Sizes, preprocess
from serverctl import REPO_ROOT
from serverctl.triton import rust_backend_so

COCO = os.environ.get("COCO_SUBSET_DIR",
                      os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "coco_val2017_subset"))
PHOTOS = sorted(os.listdir(os.path.join(COCO, "images")))[:: 40]  # 6 photos spread over the subset
OUTPUTS = ["yolo_input", "clip_input", "original", "letterbox", "image_size"]
SIZES = Sizes()

# (max abs, mean abs) on /255 values; see the module docstring.
EXACT_PIXELS = (1.0 / 255 + 1e-6, 0.0015)
JPEG_PIXELS = (6.0 / 255 + 1e-6, 0.002)
MEASURED: dict[str, list[tuple[float, float]]] = {}
_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def url(triton):
    if not os.path.exists(rust_backend_so("preprocess")):
        pytest.skip("preprocess backend not built: cargo build --release -p preprocess-backend")
    return triton.http_url


def run(url: str, data: bytes):
    return infer(url, "preprocess", {"image": np.frombuffer(data, np.uint8)[None, :]}, OUTPUTS)


def photo(name: str) -> Image.Image:
    return Image.open(os.path.join(COCO, "images", name)).convert("RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def diff(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) * scale
    return float(d.max()), float(d.mean())


def check(result, expected: dict, tol: tuple[float, float], label: str,
          original_tol: tuple[float, float] | None = None):
    """Every output of `result` against the reference; records the measured differences."""
    assert result.ok, f"{label}: {result.error}"
    out = {k: v[0] for k, v in result.outputs.items()}
    assert out["original"].shape == expected["original"].shape, f"{label}: original {out['original'].shape}"
    np.testing.assert_array_equal(out["image_size"], expected["image_size"], err_msg=label)
    np.testing.assert_allclose(out["letterbox"], expected["letterbox"], rtol=0, atol=1e-6, err_msg=label)
    for name, scale, limit in (("yolo_input", 1.0, tol), ("clip_input", 1.0, tol),
                               ("original", 1 / 255, original_tol or tol)):
        assert out[name].shape == expected[name].shape, f"{label}: {name} {out[name].shape}"
        worst, mean = diff(out[name], expected[name], scale)
        with _LOCK:
            key = f"{name} ({'same decode' if tol == EXACT_PIXELS else 'JPEG'})"
            MEASURED.setdefault(key, []).append((worst, mean))
        assert worst <= limit[0] and mean <= limit[1], \
            f"{label}: {name} max {worst * 255:.2f}/255, mean {mean * 255:.3f}/255"
    return out


@pytest.fixture(scope="module", autouse=True)
def report_measured():
    yield
    for key, values in sorted(MEASURED.items()):
        worst = max(v[0] for v in values) * 255
        mean = max(v[1] for v in values) * 255
        print(f"\npreprocess vs reference, {key}: max {worst:.2f}/255, worst mean {mean:.4f}/255 "
              f"over {len(values)} images")


# ---------------------------------------------------------------------------------------
# Real photos: as shipped (JPEG), and resized up / down as lossless PNG

@pytest.mark.parametrize("name", PHOTOS)
def test_coco_jpeg_matches_reference(url, name):
    data = open(os.path.join(COCO, "images", name), "rb").read()
    check(run(url, data), preprocess(data), JPEG_PIXELS, name)


@pytest.mark.parametrize("size", [(1280, 960), (2500, 1700), (320, 240), (150, 333)])
@pytest.mark.parametrize("name", PHOTOS[:3])
def test_resized_png_matches_reference(url, name, size):
    img = photo(name).resize(size, Image.BICUBIC)
    data = encode(img, "PNG", compress_level=1)
    exp = preprocess(data)
    # The reference and the backend decode PNG identically, so only resampling differs.
    check(run(url, data), exp, EXACT_PIXELS, f"{name} {size}",
          original_tol=EXACT_PIXELS if max(size) > SIZES.original_max_side else (0.0, 0.0))


def test_original_is_the_decoded_photo_when_not_capped(url):
    img = photo(PHOTOS[0])
    out = run(url, encode(img, "PNG"))
    assert out.ok, out.error
    np.testing.assert_array_equal(out.outputs["original"][0], np.asarray(img))


# ---------------------------------------------------------------------------------------
# Hard inputs

def exif_jpeg(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=92, exif=exif.tobytes())


# What each EXIF orientation does to the stored pixels to display them.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(url, orientation):
    img = photo(PHOTOS[1])
    plain = run(url, encode(img, "JPEG", quality=92))
    rotated_bytes = exif_jpeg(img, orientation)
    rotated = run(url, rotated_bytes)
    assert plain.ok and rotated.ok, (plain.error, rotated.error)
    # Same JPEG data, so the backend's own decode, oriented, must match exactly.
    np.testing.assert_array_equal(rotated.outputs["original"][0], ORIENT[orientation](plain.outputs["original"][0]))
    h, w = np.asarray(img).shape[:2]
    assert list(rotated.outputs["image_size"][0]) == ([w, h] if orientation >= 5 else [h, w])
    check(rotated, preprocess(rotated_bytes), JPEG_PIXELS, f"EXIF {orientation}")


def test_png_with_alpha_drops_alpha(url):
    rgb = np.asarray(photo(PHOTOS[2]).resize((300, 200)))
    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    data = encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
    out = check(run(url, data), preprocess(data), EXACT_PIXELS, "RGBA PNG", original_tol=(0.0, 0.0))
    np.testing.assert_array_equal(out["original"], rgb)


def test_webp_lossless(url):
    img = photo(PHOTOS[3]).resize((400, 300))
    data = encode(img, "WEBP", lossless=True)
    out = check(run(url, data), preprocess(data), EXACT_PIXELS, "WebP", original_tol=(0.0, 0.0))
    np.testing.assert_array_equal(out["original"], np.asarray(img))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_greyscale(url, fmt):
    grey = photo(PHOTOS[4]).convert("L")
    data = encode(grey, fmt)
    exact = fmt == "PNG"
    out = check(run(url, data), preprocess(data), EXACT_PIXELS if exact else JPEG_PIXELS, f"grey {fmt}",
                original_tol=(0.0, 0.0) if exact else None)
    original = out["original"]
    assert (original[..., 0] == original[..., 1]).all() and (original[..., 1] == original[..., 2]).all()


def test_sixteen_bit_png_rounds_to_eight_bits(url):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (60, 90, 3), dtype=np.uint16)
    ok, png = cv2.imencode(".png", deep[..., ::-1])  # OpenCV writes BGR
    assert ok
    out = run(url, png.tobytes())
    assert out.ok, out.error
    expected = np.round(deep / 257.0)
    assert diff(out.outputs["original"][0], expected)[0] <= 1.0


def test_cmyk_jpeg(url):
    cmyk = photo(PHOTOS[5]).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    check(run(url, data), preprocess(data), JPEG_PIXELS, "CMYK JPEG")


def test_one_pixel(url):
    data = encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    out = check(run(url, data), preprocess(data), EXACT_PIXELS, "1x1", original_tol=(0.0, 0.0))
    assert list(out["letterbox"]) == [640.0, 0.0, 0.0]


def test_extreme_aspect_ratio(url):
    data = encode(photo(PHOTOS[0]).resize((3000, 2)), "PNG")
    check(run(url, data), preprocess(data), EXACT_PIXELS, "3000x2")


def test_8000x6000_photo(url):
    img = photo(PHOTOS[1]).resize((8000, 6000), Image.BILINEAR)
    data = encode(img, "JPEG", quality=90)
    out = check(run(url, data), preprocess(data), JPEG_PIXELS, "8000x6000")
    assert out["original"].shape == (1440, 1920, 3)
    assert list(out["image_size"]) == [6000, 8000]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny data chunk: a decompression bomb
    as far as the header goes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def good_jpeg() -> bytes:
    return encode(photo(PHOTOS[0]), "JPEG", quality=90)


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, words the error must contain)."""
    jpeg = good_jpeg()
    rng = np.random.default_rng(2)
    png = encode(photo(PHOTOS[0]).resize((64, 48)), "PNG")
    bad_crc = bytearray(png)
    bad_crc[40] ^= 0xFF
    return {
        "truncated JPEG": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated PNG": (png[: len(png) // 2], "PNG"),
        "JPEG signature + noise": (jpeg[:2] + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "JPEG"),
        "PNG with a broken chunk": (bytes(bad_crc), "PNG"),
        "text": (b"this is not an image, it is a sentence about one", "not a JPEG, PNG or WebP"),
        "GIF": (b"GIF89a" + b"\0" * 64, "not a JPEG, PNG or WebP"),
        "header says 20000x20000": (png_header_only(20000, 20000), "max_pixels"),
    }


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_input_is_a_clear_error(url, name):
    data, words = bad_inputs()[name]
    r = run(url, data)
    assert not r.ok and r.status == 400, f"{name}: {r.status} {r.error}"
    assert words in r.error, f"{name}: {r.error}"


def test_empty_input(url):
    r = run(url, b"")
    assert not r.ok and "empty" in r.error.lower(), r.error


def test_too_many_bytes(url):
    data = b"\xff\xd8" + b"\0" * (50 * 1024 * 1024)
    r = run(url, data)
    assert not r.ok and "max_image_bytes" in r.error, r.error


def batched_executions(url: str) -> int:
    r = requests.get(f"{url}/v2/models/preprocess/stats", timeout=30)
    r.raise_for_status()
    batch_stats = r.json()["model_stats"][0].get("batch_stats", [])
    return sum(b["compute_infer"]["count"] for b in batch_stats if b["batch_size"] > 1)


def test_batch_mixing_good_and_bad_images(url):
    sizes = [(500, 400), (333, 640), (640, 640), (1200, 300)]
    goods = [encode(photo(n).resize(s), "PNG") for n, s in zip(PHOTOS, sizes)]
    bads = [v for v, _ in bad_inputs().values()][:4]
    cases = [(d, True) for d in goods] + [(d, False) for d in bads]
    before = batched_executions(url)
    grouped = False
    for _ in range(5):  # the batcher groups concurrent requests; retry a few times if it did not
        barrier = threading.Barrier(len(cases))

        def one(data, barrier=barrier):  # this attempt's barrier, bound now
            barrier.wait(timeout=60)
            return run(url, data)

        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            results = list(pool.map(one, [d for d, _ in cases]))
        for (data, good), result in zip(cases, results):
            if good:
                check(result, preprocess(data), EXACT_PIXELS, "batched good photo", original_tol=(0.0, 0.0))
            else:
                assert not result.ok and result.status == 400, result.error
        if batched_executions(url) > before:
            grouped = True
            break
    assert grouped, "no preprocess execution with batch_size > 1"
    # The server keeps serving afterwards.
    data = good_jpeg()
    check(run(url, data), preprocess(data), JPEG_PIXELS, "after the bad batch")


def test_bad_parameter_fails_the_load(url, triton):
    name = "preprocess_bad_yolo_size"
    dst = os.path.join(triton.repo, name)
    shutil.copytree(os.path.join(triton.repo, "preprocess"), dst, dirs_exist_ok=True)
    path = os.path.join(dst, "config.pbtxt")
    text = open(path).read().replace('name: "preprocess"', f'name: "{name}"')
    text = text.replace('key: "yolo_size" value { string_value: "640" }',
                        'key: "yolo_size" value { string_value: "0" }')
    open(path, "w").write(text)
    r = requests.post(f"{url}/v2/repository/models/{name}/load", timeout=60)
    assert r.status_code != 200 and "yolo_size" in r.text, r.text
    assert run(url, good_jpeg()).ok
