"""Overload on the Triton side is a fast, clear error, never an unbounded wait or a crash:

- a flood beyond a model's queue (`default_queue_policy.max_queue_size`) is rejected at once;
- box_embed stops waiting for a hung encoder after `encoder_timeout_ms` and answers with an
  error naming that timeout, so the instance serves the next request;
- concurrent maximum-size decodes in `preprocess` stay within `decode_pixel_budget`: the
  server's peak memory stays under the bound the config implies (docs/preprocess.md), and the
  photos that do not fit in time fail with the overload error.

The first two use `tests/models/slow_encoder` (a test-only encoder that sleeps) in the session
server; the third starts a server of its own, with more decode threads than this machine has
cores, as a many-core host would run.
"""
from __future__ import annotations

import concurrent.futures
import os
import shutil
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import requests

from conftest import LOG_DIR, SOURCE_REPO, _variant, config_parameters, read_config
from kserve_http import infer
from serverctl.proc import log_tail, proc_status_kib
from serverctl.triton import TritonServer

SLOW_ENCODER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "slow_encoder")
HUNG_BOX_EMBED = "box_embed_hung_encoder"
ENCODER_TIMEOUT_MS = 1000
BOX_OUTPUTS = ["box_embeddings", "box_valid", "boxes"]


def load(url: str, model: str) -> None:
    r = requests.post(f"{url}/v2/repository/models/{model}/load", timeout=120)
    assert r.status_code == 200, f"loading {model}: {r.status_code} {r.text}"


@pytest.fixture(scope="module")
def slow_models(box_embed_ready):
    triton = box_embed_ready
    shutil.copytree(SLOW_ENCODER, os.path.join(triton.repo, "slow_encoder"), dirs_exist_ok=True)
    _variant(triton.repo, "box_embed", HUNG_BOX_EMBED,
             {"encoder_model": "slow_encoder", "encoder_timeout_ms": str(ENCODER_TIMEOUT_MS)})
    load(triton.http_url, "slow_encoder")
    load(triton.http_url, HUNG_BOX_EMBED)
    sleep_s = float(config_parameters(read_config(SLOW_ENCODER))["sleep_s"])
    yield triton, sleep_s
    for model in (HUNG_BOX_EMBED, "slow_encoder"):
        requests.post(f"{triton.http_url}/v2/repository/models/{model}/unload", timeout=120)


def timed(fn):
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def assert_ready(url: str) -> None:
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200


def test_a_flood_beyond_the_queue_is_rejected_at_once(slow_models):
    triton, sleep_s = slow_models
    queue = 2  # slow_encoder's max_queue_size; one more request runs, batch size 1
    crops = np.zeros((1, 3, 256, 256), np.float32)
    flood = 10

    def one():
        return timed(lambda: infer(triton.http_url, "slow_encoder", {"images": crops}, ["embeddings"], timeout=120))

    with concurrent.futures.ThreadPoolExecutor(flood) as pool:
        results = list(pool.map(lambda _: one(), range(flood)))
    rejected = [(r, t) for r, t in results if not r.ok]
    served = [(r, t) for r, t in results if r.ok]
    print(f"\nflood of {flood}: {len(served)} served in {[round(t, 1) for _, t in served]} s, "
          f"{len(rejected)} rejected in {[round(t, 2) for _, t in rejected]} s, "
          f"statuses {sorted({r.status for r, _ in rejected})}")
    # At most one running + `queue` queued (+1 for a request dequeued while the flood arrives).
    assert len(served) <= queue + 2 and len(rejected) >= flood - queue - 2, results
    for r, t in rejected:
        assert "Exceeds maximum queue size" in r.error, r.error
        assert r.status == 503, (r.status, r.error)
        assert t < sleep_s / 2, f"a rejection took {t:.2f}s: it waited instead of failing at once"
    assert all(t >= sleep_s * 0.9 for _, t in served)
    assert_ready(triton.http_url)
    again, _ = one()
    assert again.ok, again.error


def box_request(size: int = 64) -> dict:
    rng = np.random.default_rng(5)
    return {
        "original": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
        "det_boxes": np.array([[[4, 4, 40, 50]]], np.float32),
        "num_dets": np.array([[1]], np.int32),
        "letterbox": np.array([[1.0, 0.0, 0.0]], np.float32),
    }


def test_a_hung_encoder_fails_box_embed_after_encoder_timeout_ms(slow_models):
    triton, sleep_s = slow_models
    timeout_s = ENCODER_TIMEOUT_MS / 1000
    assert sleep_s >= 2.5 * timeout_s, "the encoder must hang well past the timeout for this test to mean anything"
    # Back to back: without the timeout the first waits sleep_s and the second up to twice that.
    for attempt in range(3):
        r, took = timed(lambda: infer(triton.http_url, HUNG_BOX_EMBED, box_request(), BOX_OUTPUTS, timeout=120))
        print(f"\nattempt {attempt}: HTTP {r.status} after {took:.2f}s: {r.error}")
        assert not r.ok
        assert r.status == 503, (r.status, r.error)
        assert f"did not answer within {ENCODER_TIMEOUT_MS} ms" in r.error and "encoder_timeout_ms" in r.error, r.error
        assert r.error.startswith("encoder 'slow_encoder': did not answer"), r.error
        assert timeout_s * 0.9 <= took < timeout_s + 1.5, f"answered after {took:.2f}s"
    # The abandoned encoder calls finish later; their late responses are dropped, the server lives on.
    time.sleep(3 * sleep_s)
    assert_ready(triton.http_url)
    good = infer(triton.http_url, "box_embed", box_request(), BOX_OUTPUTS, timeout=120)
    assert good.ok and bool(good.outputs["box_valid"][0][0]), good.error


# --- preprocess: the decode pixel budget under a flood of maximum-size photos --------------

BYTES_PER_DECODED_PIXEL = 11  # 16-bit RGBA (8) + its RGB8 copy (3); see docs/preprocess.md
DECODE_THREADS = 8  # RAYON_NUM_THREADS of the test server: a many-core host's concurrency
UPLOADS = 10
SLACK = 256 << 20  # allocator and runtime noise


def exif_orientation_tiff(orientation: int) -> bytes:
    """A big-endian TIFF header with one IFD entry: Orientation (0x0112, SHORT)."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)


def rgba16_png(width: int, height: int, orientation: int) -> bytes:
    """A 16-bit RGBA PNG (smooth ramps, so it compresses) with an eXIf chunk after IHDR."""
    x = (np.arange(width, dtype=np.uint32) * 65535 // max(width - 1, 1)).astype(np.uint16)
    y = (np.arange(height, dtype=np.uint32) * 65535 // max(height - 1, 1)).astype(np.uint16)
    bgra = np.empty((height, width, 4), np.uint16)
    bgra[..., 0] = 20000
    bgra[..., 1] = y[:, None]
    bgra[..., 2] = x[None, :]
    bgra[..., 3] = 65535
    ok, encoded = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    del bgra
    png = encoded.tobytes()
    body = exif_orientation_tiff(orientation)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    ihdr_end = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def test_concurrent_large_decodes_stay_within_the_pixel_budget(tmp_path, monkeypatch, triton):
    # `triton` only for the prerequisites it sets up (backends installed); this test runs its own server.
    params = config_parameters(read_config(os.path.join(SOURCE_REPO, "preprocess")))
    max_pixels, budget = int(params["max_pixels"]), int(params["decode_pixel_budget"])
    max_bytes = int(params["max_image_bytes"])
    width = 8000
    height = max_pixels // width  # a maximum-size photo, stored sideways (EXIF 6: rotate 90)
    data = rgba16_png(width, height, orientation=6)
    assert len(data) <= max_bytes, f"test photo is {len(data)} bytes"
    assert budget < DECODE_THREADS * width * height, "the budget must be what limits the decodes here"

    repo = tmp_path / "repo"
    shutil.copytree(os.path.join(SOURCE_REPO, "preprocess"), repo / "preprocess")
    monkeypatch.setenv("RAYON_NUM_THREADS", str(DECODE_THREADS))
    log_path = os.path.join(LOG_DIR, f"tritonserver-budget-{os.getpid()}.log")
    server = TritonServer(str(repo), ["preprocess"], log_path=log_path)
    server.start()
    try:
        server.wait_ready(timeout=60)
        small = rgba16_png(64, 48, orientation=6)
        warm = infer(server.http_url, "preprocess", {"image": np.frombuffer(small, np.uint8)[None]}, ["image_size"])
        assert warm.ok and list(warm.outputs["image_size"][0]) == [64, 48], warm.error
        baseline = proc_status_kib(server.pid, "VmRSS") << 10

        def upload():
            return timed(lambda: infer(server.http_url, "preprocess", {"image": np.frombuffer(data, np.uint8)[None]},
                                       ["image_size", "letterbox"], timeout=120))

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
            results = list(pool.map(lambda _: upload(), range(UPLOADS)))
        elapsed = time.monotonic() - started
        peak = proc_status_kib(server.pid, "VmHWM") << 10
        assert server.alive(), f"tritonserver died: {log_tail(server.log_path)}"

        # Each request also holds its upload (Triton's copy, possibly one contiguous copy) and
        # its outputs (written once, serialised once), whatever the budget.
        outputs = 4 * (3 * 640 * 640 + 3 * 256 * 256) + 1920 * 1920 * 3
        per_request = 2 * len(data) + 2 * outputs
        bound = baseline + budget * BYTES_PER_DECODED_PIXEL + UPLOADS * per_request + SLACK
        served = [t for r, t in results if r.ok]
        overloaded = [r for r, _ in results if not r.ok]
        print(f"\n{UPLOADS} uploads of a {width}x{height} 16-bit RGBA PNG ({len(data) / 1e6:.1f} MB, EXIF 6) "
              f"in {elapsed:.1f}s: {len(served)} served, {len(overloaded)} overloaded; "
              f"baseline RSS {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB "
              f"(without the budget {DECODE_THREADS} decodes would add "
              f"{DECODE_THREADS * width * height * BYTES_PER_DECODED_PIXEL / 2**20:.0f} MiB)")
        for r, _ in results:
            if r.ok:
                assert list(r.outputs["image_size"][0]) == [width, height]  # (H, W) after the rotation
            else:  # the budget's wait, or the queue's (default_timeout_microseconds): both overload, 503
                budget_wait = "overloaded" in r.error and "decode_pixel_budget" in r.error
                assert r.status == 503 and (budget_wait or "Request timeout expired" in r.error), r.error
        assert served, "no upload got through"
        assert peak <= bound, f"peak RSS {peak / 2**20:.0f} MiB over the bound {bound / 2**20:.0f} MiB"
        assert elapsed < 60
        again = infer(server.http_url, "preprocess", {"image": np.frombuffer(small, np.uint8)[None]}, ["image_size"])
        assert again.ok, again.error
    finally:
        server.stop()
    assert not server.crash_lines(), server.crash_lines()
