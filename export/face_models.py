#!/usr/bin/env python3
"""Prepare the shipped face models for the GPU repository.

    python export/face_models.py --out DIR [--shared ../shared]

face_encoder.onnx  MobileFaceNet (../shared/models/mobilefacenet) with its input renamed
                   `input` -> `faces` and its output width fixed to 128, so the TensorRT plan
                   has the tensors of model_repository/face_encoder (weights unchanged).
face_detect        SCRFD-500M is used as shipped, by the Python backend on the host
                   (docs/models.md): nothing to convert.
"""
from __future__ import annotations

import argparse
import os
import sys

import onnx

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared"))
ENCODER_SRC = os.path.join("models", "mobilefacenet", "mobilefacenet.onnx")
INPUT, OUTPUT, DIM = "faces", "embeddings", 128


def rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def face_encoder(src: str, dst: str) -> None:
    model = onnx.load(src)
    (inp,) = model.graph.input
    rename_input(model, inp.name, INPUT)
    (out,) = model.graph.output
    if out.name != OUTPUT:
        raise SystemExit(f"{src}: output {out.name!r}, expected {OUTPUT!r}")
    out.type.tensor_type.shape.dim[1].dim_value = DIM
    onnx.checker.check_model(model)
    onnx.save(model, dst)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--shared", default=SHARED)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    dst = os.path.join(a.out, "face_encoder.onnx")
    face_encoder(os.path.join(a.shared, ENCODER_SRC), dst)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
