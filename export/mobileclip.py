#!/usr/bin/env python3
"""Export the MobileCLIP2-S2 image and text towers (open_clip + timm) to ONNX for Triton.

    .cache/export-venv/bin/python export/mobileclip.py --out DIR [--checkpoint open_clip_model.safetensors]

Without --checkpoint the towers get open_clip's random initialisation (seeded): the real
architecture for tests and CPU benchmarks. With one, the operator's MobileCLIP2-S2 weights
(an open_clip checkpoint file, e.g. the `open_clip_model.safetensors` of the
MobileCLIP2-S2-OpenCLIP release) are loaded by the same code path.

Both towers are reparameterised (timm's conv/BN and branch fusion) before export, and
exported with a dynamic batch, opset >= 17, their outputs L2-normalised, under the tensor
names of model_repository/clip_image and clip_text:
  clip_image.onnx  images FP32 [N,3,256,256] (RGB in [0,1], preprocess's clip_input; the
                   model's mean/std normalisation is inside) -> embeddings FP32 [N,512]
  clip_text.onnx   tokens INT64 [N,77] (CLIP BPE ids, as the gateway's clip-tokenizer) ->
                   embeddings FP32 [N,512]
"""
from __future__ import annotations

import argparse
import os
import sys

import onnx
import open_clip
import torch
from timm.utils import reparameterize_model

MODEL = "MobileCLIP2-S2"
PRETRAINED_TAG = "dfndr2b"  # the release whose preprocessing (mean/std) the image tower folds in
OPSET = 18
IMAGE_SIZE = 256
CONTEXT = 77


class ImageTower(torch.nn.Module):
    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images):
        return self.model.encode_image((images - self.mean) / self.std, normalize=True)


class TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens, normalize=True)


def build(checkpoint: str | None = None, seed: int = 0):
    """(image tower, text tower), eval mode, reparameterised; weights from `checkpoint` or random."""
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=checkpoint, load_weights=checkpoint is not None)
    model.eval()
    model = reparameterize_model(model)
    cfg = open_clip.get_pretrained_cfg(MODEL, PRETRAINED_TAG)
    return ImageTower(model, cfg["mean"], cfg["std"]).eval(), TextTower(model).eval()


def tokenizer():
    return open_clip.get_tokenizer(MODEL)


def export(out_dir: str, checkpoint: str | None = None, seed: int = 0) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    image, text = build(checkpoint, seed)
    paths = {"clip_image": os.path.join(out_dir, "clip_image.onnx"),
             "clip_text": os.path.join(out_dir, "clip_text.onnx")}
    # The fused attention kernel of nn.MultiheadAttention's inference fast path has no ONNX
    # export; the plain path computes the same thing.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(image, (torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE),), paths["clip_image"],
                          input_names=["images"], output_names=["embeddings"], opset_version=OPSET,
                          dynamic_axes={"images": {0: "N"}, "embeddings": {0: "N"}}, dynamo=False)
        tokens = tokenizer()(["a photo of a dog", "two cats on a sofa"])
        torch.onnx.export(text, (tokens,), paths["clip_text"],
                          input_names=["tokens"], output_names=["embeddings"], opset_version=OPSET,
                          dynamic_axes={"tokens": {0: "N"}, "embeddings": {0: "N"}}, dynamo=False)
    for path in paths.values():
        name_output_dims(path, open_clip.get_model_config(MODEL)["embed_dim"])
    return paths


def name_output_dims(path: str, dim: int) -> None:
    """The exporter leaves the embedding width symbolic; Triton and TensorRT want it fixed."""
    model = onnx.load(path)
    (out,) = model.graph.output
    dims = out.type.tensor_type.shape.dim
    dims[0].dim_param = "N"
    dims[1].dim_value = dim
    onnx.save(model, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for clip_image.onnx and clip_text.onnx")
    p.add_argument("--checkpoint", help="open_clip MobileCLIP2-S2 weights; random weights without it")
    p.add_argument("--seed", type=int, default=0, help="for the random weights")
    a = p.parse_args(argv)
    for name, path in export(a.out, a.checkpoint, a.seed).items():
        print(f"{name}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
