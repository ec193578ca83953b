#!/usr/bin/env python3
"""Link the real detector and face weights from ../shared/models into model_repository/.

The weights are not ours to commit (and .gitignore keeps them out); the models find them
under their version folder through relative symlinks. Idempotent: a link that already
points at the right file is left alone, anything else at that path is replaced.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared"))
MODEL_REPO = os.path.join(REPO_ROOT, "model_repository")

# link (relative to model_repository/) -> weights (relative to ../shared)
LINKS = {
    "yolo/1/model.onnx": "models/yolov8n_int8/yolov8n_int8.onnx",
    "yolo/1/yolox_nano.onnx": "models/yolox_nano/yolox_nano.onnx",
    "face_detect/1/model.onnx": "models/scrfd_500m_bnkps/scrfd_500m_bnkps.onnx",
    "face_encoder/1/model.onnx": "models/mobilefacenet/mobilefacenet.onnx",
}


class MissingWeights(RuntimeError):
    pass


def link(shared_dir: str = SHARED_DIR, model_repo: str = MODEL_REPO) -> list[str]:
    """Create or fix every link; returns one note per link changed."""
    if not os.path.isdir(shared_dir):
        raise MissingWeights(f"shared assets not found at {shared_dir}: the repository expects "
                             f"../shared (models and photos) beside the checkout")
    notes = []
    for name, source in LINKS.items():
        target = os.path.join(shared_dir, source)
        if not os.path.isfile(target):
            raise MissingWeights(f"weights missing: {target} (see {shared_dir}/models/MODELS.md)")
        path = os.path.join(model_repo, name)
        wanted = os.path.relpath(target, os.path.dirname(path))
        if os.path.islink(path) and os.readlink(path) == wanted:
            continue
        tmp = f"{path}.tmp.{os.getpid()}"
        os.symlink(wanted, tmp)
        os.replace(tmp, path)
        notes.append(f"linked {path} -> {wanted}")
    return notes


def link_clip(onnx_dir: str, model_repo: str = MODEL_REPO) -> list[str]:
    """Serve exported CLIP towers (export/mobileclip.py: clip_image.onnx, clip_text.onnx in
    onnx_dir) in place of the generated stand-ins; scripts/gen_encoders.py puts those back."""
    notes = []
    for model in ("clip_image", "clip_text"):
        target = os.path.abspath(os.path.join(onnx_dir, f"{model}.onnx"))
        if not os.path.isfile(target):
            raise MissingWeights(f"{target} missing: export it with export/mobileclip.py --out {onnx_dir}")
        path = os.path.join(model_repo, model, "1", "model.onnx")
        tmp = f"{path}.tmp.{os.getpid()}"
        os.symlink(target, tmp)
        os.replace(tmp, path)
        notes.append(f"linked {path} -> {target}")
    return notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared-dir", default=SHARED_DIR)
    p.add_argument("--clip-onnx-dir", help="also serve the exported CLIP towers in this folder")
    a = p.parse_args(argv)
    try:
        notes = link(a.shared_dir)
        if a.clip_onnx_dir:
            notes += link_clip(a.clip_onnx_dir)
    except MissingWeights as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(notes) if notes else "model links up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
