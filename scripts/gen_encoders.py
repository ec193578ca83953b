#!/usr/bin/env python3
"""Generate the tiny deterministic stand-in encoders (image and text) used by tests and local runs.

The graph is small enough for CPU tests yet sensitive to what the crop holds and where:
two branches pooled to a 16x16 grid -- the pixels themselves (position: catches offsets
and stretching) and the magnitude of a 3x3 Laplacian (fine detail: catches the wrong
sampling ratio or interpolation, which plain pooling averages away) -- then
dense -> tanh -> dense -> L2 normalise.

Contract (same as the production encoder): input `images` FP32 [N,3,S,S] in [0,1],
output `embeddings` FP32 [N,D], unit L2 norm. Weights come from a fixed seed, so the
bytes are identical on every machine; the file is only rewritten when they change.

The text encoder (clip_text) follows the CLIP text tower's contract: `tokens` INT64
[N,77] (SOT, BPE ids, EOT, zero padding) -> `embeddings` FP32 [N,D], unit L2 norm.
Like CLIP it reads only the positions up to the end-of-text token, found as the argmax
of the ids (EOT 49407 is the largest id), so padding never changes the result. Token
embeddings come from two small tables indexed by the id modulo two primes (a CLIP-sized
49408-row table would make the file 25 MB+; two co-prime hashes keep distinct ids apart),
plus a position embedding, then a per-position tanh layer before masked mean pooling,
so the order of the tokens matters.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "model_repository", "clip_image", "1", "model.onnx")
DEFAULT_TEXT_OUT = os.path.join(REPO_ROOT, "model_repository", "clip_text", "1", "model.onnx")
GRID = 16  # pooled grid side; keeps 16x16 spatial cells per channel
HIDDEN = 256
DETAIL_GAIN = 10.0  # Laplacian magnitudes of natural photos are ~0.05; bring them near pixel scale
OPSET = 17
IR_VERSION = 8  # old enough for any recent onnxruntime
CONTEXT_LENGTH = 77  # CLIP's token context
TOKEN_HASH_PRIMES = (2039, 2029)  # rows of the two hashed token tables
TOKEN_WIDTH = 64
TEXT_HIDDEN = 128


def build_encoder(crop_size: int, dim: int, seed: int) -> onnx.ModelProto:
    if crop_size % GRID != 0:
        raise ValueError(f"crop size {crop_size} must be a multiple of {GRID}")
    pool = crop_size // GRID
    features = 2 * 3 * GRID * GRID
    rng = np.random.RandomState(seed)
    # Gains keep tanh in its linear-ish range for inputs centred around 0.
    w1 = (rng.standard_normal((features, HIDDEN)) * (4.0 / np.sqrt(features))).astype(np.float32)
    b1 = (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, dim)) / np.sqrt(HIDDEN)).astype(np.float32)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)

    inits = [
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "centre"),
        numpy_helper.from_array(np.tile(laplacian, (3, 1, 1, 1)), "lap"),  # [3,1,3,3], one per channel
        numpy_helper.from_array(np.array(DETAIL_GAIN, dtype=np.float32), "detail_gain"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
    ]
    pool_attrs = dict(kernel_shape=[pool, pool], strides=[pool, pool])
    nodes = [
        helper.make_node("Sub", ["images", "centre"], ["centred"]),
        helper.make_node("AveragePool", ["centred"], ["pooled"], **pool_attrs),
        helper.make_node("Flatten", ["pooled"], ["flat_pixels"], axis=1),
        helper.make_node("Conv", ["images", "lap"], ["edges"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Abs", ["edges"], ["edge_mag"]),
        helper.make_node("AveragePool", ["edge_mag"], ["edge_pooled"], **pool_attrs),
        helper.make_node("Flatten", ["edge_pooled"], ["flat_edges_raw"], axis=1),
        helper.make_node("Mul", ["flat_edges_raw", "detail_gain"], ["flat_edges"]),
        helper.make_node("Concat", ["flat_pixels", "flat_edges"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["raw"]),
        helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
        helper.make_node("Div", ["raw", "safe_norm"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_clip_image",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="gen_encoders",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_text_encoder(dim: int, seed: int) -> onnx.ModelProto:
    rng = np.random.RandomState(seed)
    tables = [(rng.standard_normal((rows, TOKEN_WIDTH)) * 0.5).astype(np.float32) for rows in TOKEN_HASH_PRIMES]
    positions = (rng.standard_normal((CONTEXT_LENGTH, TOKEN_WIDTH)) * 0.5).astype(np.float32)
    w1 = (rng.standard_normal((TOKEN_WIDTH, TEXT_HIDDEN)) / np.sqrt(TOKEN_WIDTH)).astype(np.float32)
    b1 = (rng.standard_normal(TEXT_HIDDEN) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((TEXT_HIDDEN, dim)) / np.sqrt(TEXT_HIDDEN)).astype(np.float32)

    inits = [
        numpy_helper.from_array(tables[0], "table_a"),
        numpy_helper.from_array(tables[1], "table_b"),
        numpy_helper.from_array(np.array(TOKEN_HASH_PRIMES[0], dtype=np.int64), "prime_a"),
        numpy_helper.from_array(np.array(TOKEN_HASH_PRIMES[1], dtype=np.int64), "prime_b"),
        numpy_helper.from_array(positions, "position_embedding"),
        numpy_helper.from_array(np.arange(CONTEXT_LENGTH, dtype=np.int64), "position_index"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Mod", ["tokens", "prime_a"], ["ids_a"]),
        helper.make_node("Mod", ["tokens", "prime_b"], ["ids_b"]),
        helper.make_node("Gather", ["table_a", "ids_a"], ["emb_a"]),
        helper.make_node("Gather", ["table_b", "ids_b"], ["emb_b"]),
        helper.make_node("Add", ["emb_a", "emb_b"], ["emb_tokens"]),
        helper.make_node("Add", ["emb_tokens", "position_embedding"], ["emb"]),  # [N,77,W]
        helper.make_node("MatMul", ["emb", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h"]),  # [N,77,H]
        # Keep positions 0..=argmax(tokens): everything up to and including EOT.
        helper.make_node("ArgMax", ["tokens"], ["eot_position"], axis=1, keepdims=1),  # [N,1]
        helper.make_node("LessOrEqual", ["position_index", "eot_position"], ["keep_bool"]),  # [N,77]
        helper.make_node("Cast", ["keep_bool"], ["keep_flat"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keep_flat", "axis_2"], ["keep"]),  # [N,77,1]
        helper.make_node("Mul", ["h", "keep"], ["h_kept"]),
        helper.make_node("ReduceSum", ["h_kept", "axis_1"], ["h_sum"], keepdims=0),  # [N,H]
        helper.make_node("ReduceSum", ["keep", "axis_1"], ["kept_count"], keepdims=0),  # [N,1]
        helper.make_node("Div", ["h_sum", "kept_count"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w2"], ["raw"]),
        helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
        helper.make_node("Div", ["raw", "safe_norm"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_clip_text",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", CONTEXT_LENGTH])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="gen_encoders",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_if_changed(data: bytes, path: str) -> bool:
    """Write atomically; return False when the file already holds these bytes."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True


def generate(out: str = DEFAULT_OUT, crop_size: int = 256, dim: int = 512, seed: int = 0) -> bool:
    data = build_encoder(crop_size, dim, seed).SerializeToString()
    return write_if_changed(data, out)


def generate_text(out: str = DEFAULT_TEXT_OUT, dim: int = 512, seed: int = 1) -> bool:
    data = build_text_encoder(dim, seed).SerializeToString()
    return write_if_changed(data, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="image encoder file")
    p.add_argument("--text-out", default=DEFAULT_TEXT_OUT, help="text encoder file")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    changed = generate(a.out, a.crop_size, a.dim, a.seed)
    print(f"{'wrote' if changed else 'unchanged'} {a.out}")
    changed = generate_text(a.text_out, a.dim, a.seed + 1)
    print(f"{'wrote' if changed else 'unchanged'} {a.text_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
