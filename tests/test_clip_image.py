"""clip_image (Python backend + onnxruntime) served by the real tritonserver."""
import threading

import numpy as np
import requests

from kserve_http import infer


def _images(n, seed):
    rng = np.random.RandomState(seed)
    # Smooth structure plus noise: a flat-noise input would make any pooled encoder look right.
    base = rng.rand(n, 3, 8, 8).astype(np.float32)
    up = np.repeat(np.repeat(base, 32, axis=2), 32, axis=3)
    return np.clip(up + 0.1 * rng.rand(n, 3, 256, 256).astype(np.float32), 0, 1)


def _cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_generated_encoder_is_position_sensitive(encoder):
    x = _images(2, 7)
    shifted = np.roll(x, 4, axis=3)
    a, b = encoder(x), encoder(shifted)
    # A 4-pixel shift of a 256 crop must be visible far above the 0.9999 test threshold.
    assert (_cosine(a, b) < 0.999).all(), _cosine(a, b)


def test_clip_image_matches_onnxruntime(triton, encoder):
    for n, model in ((1, "clip_image"), (5, "clip_image"), (32, "clip_image"), (4, "clip_image_b4")):
        x = _images(n, n)
        r = infer(triton.http_url, model, {"images": x}, ["embeddings"])
        assert r.ok, r.error
        got = r.outputs["embeddings"]
        assert got.shape == (n, 512)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert (_cosine(got, encoder(x)) >= 0.9999).all()
        # Rows are not all the same vector: the batch was split back in order.
        if n > 1:
            assert _cosine(got[0], got[1]) < 0.99


def test_clip_image_concurrent_requests_split_correctly(triton, encoder):
    inputs = [_images(1 + i % 3, 100 + i) for i in range(12)]
    expected = [encoder(x) for x in inputs]
    results = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def worker(i):
        barrier.wait(timeout=30)
        results[i] = infer(triton.http_url, "clip_image", {"images": inputs[i]}, ["embeddings"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, r in enumerate(results):
        assert r is not None and r.ok, (i, r and r.error)
        assert r.outputs["embeddings"].shape == expected[i].shape
        assert (_cosine(r.outputs["embeddings"], expected[i]) >= 0.9999).all(), i


def test_clip_image_rejects_bad_shapes_and_keeps_serving(triton, encoder):
    r = infer(triton.http_url, "clip_image", {"images": np.zeros((1, 3, 128, 128), np.float32)}, ["embeddings"])
    assert r.status == 400 and "images" in r.error
    r = infer(triton.http_url, "clip_image_b4", {"images": _images(5, 3)}, ["embeddings"])
    assert r.status == 400 and "batch" in r.error.lower()
    x = _images(2, 9)
    r = infer(triton.http_url, "clip_image", {"images": x}, ["embeddings"])
    assert r.ok and (_cosine(r.outputs["embeddings"], encoder(x)) >= 0.9999).all()


def test_server_listens_on_loopback_only(triton):
    assert triton.http_url.startswith("http://127.0.0.1:")
    assert requests.get(f"{triton.http_url}/v2/health/ready", timeout=5).status_code == 200
    with open(triton.log_path) as f:
        log = f.read()
    assert "Started HTTPService at 127.0.0.1:" in log
    assert "Started GRPCInferenceService at 127.0.0.1:" in log
    assert "Started Metrics Service at 127.0.0.1:" in log
