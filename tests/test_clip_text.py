"""clip_text (the stand-in text encoder: Python backend + onnxruntime) served by the real tritonserver."""
import numpy as np

from kserve_http import infer

SOT, EOT, CONTEXT = 49406, 49407, 77
# "a photo of a dog" / "... cat" as the CLIP tokenizer writes them (ids from shared/models/MODELS.md).
DOG = [320, 1125, 539, 320, 1929]
CAT = [320, 1125, 539, 320, 2368]


def tokens(*queries, pad=0):
    rows = np.full((len(queries), CONTEXT), pad, dtype=np.int64)
    for row, ids in zip(rows, queries):
        seq = [SOT, *ids, EOT]
        row[:len(seq)] = seq
    return rows


def embed(triton, rows):
    r = infer(triton.http_url, "clip_text", {"tokens": rows}, ["embeddings"])
    assert r.ok, r.error
    return r.outputs["embeddings"]


def test_embeddings_are_unit_norm_and_deterministic(triton):
    rows = tokens(DOG, CAT, [])
    first = embed(triton, rows)
    assert first.shape == (3, 512) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embed(triton, rows), first)
    # The same query alone or inside a batch gives the same vector.
    np.testing.assert_allclose(embed(triton, tokens(CAT))[0], first[1], atol=1e-6)


def test_different_queries_differ(triton):
    dog, cat, swapped, empty = embed(triton, tokens(DOG, CAT, DOG[::-1], []))
    assert dog @ cat < 0.999
    # Token order matters, as in a real text tower.
    assert dog @ swapped < 0.999
    assert dog @ empty < 0.999


def test_padding_after_eot_is_ignored(triton):
    clean = tokens(DOG)
    noisy = clean.copy()
    noisy[0, len(DOG) + 2:] = np.arange(CONTEXT - len(DOG) - 2) + 1000  # garbage after EOT
    a, b = embed(triton, np.concatenate([clean, noisy]))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_wrong_dtype_or_shape_is_an_error(triton):
    r = infer(triton.http_url, "clip_text", {"tokens": tokens(DOG).astype(np.int32)}, ["embeddings"])
    assert r.status == 400 and "tokens" in r.error, (r.status, r.error)
    r = infer(triton.http_url, "clip_text", {"tokens": tokens(DOG)[:, :76]}, ["embeddings"])
    assert r.status == 400 and "tokens" in r.error, (r.status, r.error)
    r = infer(triton.http_url, "clip_text", {"tokens": np.zeros((65, CONTEXT), np.int64)}, ["embeddings"])
    assert r.status == 400, (r.status, r.error)
