#!/usr/bin/env python3
"""Generate the GPU model repository from model_repository/ (the CPU one, the single source).

The CPU configs are what Triton loads in CI and what the tests read; every tensor name,
dtype and dim of the GPU variant is copied from them, and only what differs on a GPU is
stated here, per model: the platform (TensorRT plans for the encoders, the end2end YOLO and
the face encoder), instance kinds, batching and queue tuning. Ensembles are copied as they
are. tests/test_gpu_repository.py checks that both variants agree on every tensor the
gateway and the backends use.

    scripts/gen_gpu_repository.py [--out deploy/model_repository_gpu] [--shared-dir ../shared]
                                                                       # the repository (no plans)
    scripts/gen_gpu_repository.py --engines                              # plan specs, one per line

The plans themselves are built at deploy time, inside the Triton container, by
scripts/build_engines.sh (docs/models.md), into each plan model's version folder as
model.sm<CC>.plan (one per GPU compute capability, chosen by cc_model_filenames).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass

import link_models
import model_config as mc
from model_config import Message, Quoted

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_REPO = os.path.join(REPO_ROOT, "model_repository")
DEFAULT_OUT = os.path.join(REPO_ROOT, "deploy", "model_repository_gpu")
# Compute capabilities a plan may be built for (T4, A100, A10/A40, L4/L40S, H100/H200, B200).
COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "9.0", "10.0")
# Files of a CPU version folder that the GPU variant never needs (weights are linked or built).
SKIP_FILES = shutil.ignore_patterns("__pycache__", "*.onnx", "*.tmp.*")


@dataclass(frozen=True)
class Engine:
    """How scripts/build_engines.sh builds one plan: the ONNX file (a path the operator's
    export wrote, relative to the export folder), batch sizes for the optimisation profile
    and whether FP16 is allowed (accuracy checked in docs/models.md)."""

    onnx: str
    opt_batch: int
    fp16: bool


# model -> engine; the plan's input shapes come from the config (dims, max_batch_size).
ENGINES = {
    "clip_image": Engine("clip_image.onnx", opt_batch=16, fp16=True),
    "clip_text": Engine("clip_text.onnx", opt_batch=16, fp16=True),
    "yolo": Engine("yolo_end2end.onnx", opt_batch=4, fp16=True),
    "face_encoder": Engine("face_encoder.onnx", opt_batch=16, fp16=True),
}


def plan_filenames() -> Message:
    return Message(("cc_model_filenames", Message([("key", Quoted(cc)),
                                                   ("value", Quoted(f"model.sm{cc.replace('.', '')}.plan"))]))
                   for cc in COMPUTE_CAPABILITIES)


def instances(kind: str, count: int) -> list:
    return [Message([("count", str(count)), ("kind", kind)])]


def batching(cpu: Message, preferred: list[int], delay_us: int) -> Message:
    """The CPU queue policy (size, timeout, REJECT, override) with GPU batch sizes and delay."""
    policy = cpu.get("dynamic_batching").get("default_queue_policy")
    return Message([("preferred_batch_size", [str(b) for b in preferred]),
                    ("max_queue_delay_microseconds", str(delay_us)),
                    ("default_queue_policy", policy)])


def as_plan(cpu: Message, kind_count: int, preferred: list[int], delay_us: int) -> Message:
    """A Python-backend stand-in turned into a TensorRT plan with the same tensors; its
    onnxruntime parameters go (the plan holds everything)."""
    out = Message([("name", cpu.get("name")), ("platform", Quoted("tensorrt_plan"))])
    out.extend((k, v) for k, v in cpu.without("name", "backend", "parameters", "instance_group"))
    out = out.replaced("dynamic_batching", batching(cpu, preferred, delay_us))
    out.append(("instance_group", instances("KIND_GPU", kind_count)))
    out.append(("default_model_filename", Quoted("model.plan")))
    out.extend(plan_filenames())
    return out


def fixed_rows(cpu: Message, names: tuple[str, ...], rows: int) -> Message:
    """An end2end engine's outputs have a fixed row count where the stand-in's vary."""
    outs = []
    for t in cpu.all("output"):
        if t.get("name") in names:
            dims = t.get("dims")
            t = t.replaced("dims", [str(rows)] + dims[1:])
        outs.append(t)
    return cpu.replaced("output", outs)


def yolo(cpu: Message) -> tuple[Message, str]:
    rows = int(mc.parameters(cpu)["max_detections"])
    cpu = fixed_rows(cpu, ("det_boxes", "det_scores", "det_classes"), rows)
    return as_plan(cpu, 1, [4, 8], 1000), (
        f"TensorRT end2end YOLO: EfficientNMS inside (score, IoU and {rows} detections baked in by "
        "export/yolo_end2end.py from the CPU config's parameters), so the outputs are the stand-in's "
        "with a fixed row count.")


def clip_image(cpu: Message) -> tuple[Message, str]:
    return as_plan(cpu, 1, [8, 16, 32], 500), (
        "MobileCLIP2-S2 image tower as a TensorRT plan. box_embed sends crops in chunks of "
        "max_batch_size, so full batches of 32 are the common case.")


def clip_text(cpu: Message) -> tuple[Message, str]:
    return as_plan(cpu, 1, [16, 64], 200), (
        "MobileCLIP2-S2 text tower as a TensorRT plan (INT64 tokens need TensorRT >= 10). "
        "Interactive queries: a short batching delay.")


def face_encoder(cpu: Message) -> tuple[Message, str]:
    return as_plan(cpu, 1, [8, 16, 32], 500), (
        "MobileFaceNet as a TensorRT plan (input renamed to `faces` by export/face_models.py); "
        "raw output as the stand-in (l2_normalize false).")


def gpu_instances(cpu: Message, count: int) -> Message:
    return cpu.replaced("instance_group", instances("KIND_GPU", count))


def box_embed(cpu: Message) -> tuple[Message, str]:
    return gpu_instances(cpu, 1), (
        "KIND_GPU: crops are cut on the device and handed to clip_image in GPU memory.")


def preprocess(cpu: Message) -> tuple[Message, str]:
    return cpu, ("KIND_CPU on purpose: the preprocess backend has no KIND_GPU path (nvJPEG decode is "
                 "not implemented) and refuses one at load.")


def face_align(cpu: Message) -> tuple[Message, str]:
    return cpu, ("KIND_CPU on purpose: box_embed's face mode has no KIND_GPU path and refuses one at "
                 "load; its encoder (face_encoder) runs on the GPU.")


def face_detect(cpu: Message) -> tuple[Message, str]:
    return cpu, ("SCRFD stays the Python backend (resize, anchors, NMS in scrfd.py) with onnxruntime on "
                 "the host: its ONNX has a fixed batch of 1 and raw heads (docs/models.md).")


def ensemble(cpu: Message) -> tuple[Message, str]:
    return cpu, "Ensemble: the same steps as the CPU repository."


GPU = {
    "preprocess": preprocess,
    "yolo": yolo,
    "clip_image": clip_image,
    "clip_text": clip_text,
    "box_embed": box_embed,
    "face_detect": face_detect,
    "face_align": face_align,
    "face_encoder": face_encoder,
}


def cpu_models() -> list[str]:
    return sorted(d for d in os.listdir(CPU_REPO) if os.path.isfile(os.path.join(CPU_REPO, d, "config.pbtxt")))


def read_cpu(model: str) -> Message:
    with open(os.path.join(CPU_REPO, model, "config.pbtxt")) as f:
        return mc.parse(f.read())


def gpu_config(model: str) -> tuple[Message, str]:
    cpu = read_cpu(model)
    if cpu.get("platform") == "ensemble":
        return ensemble(cpu)
    if model not in GPU:
        raise SystemExit(f"model_repository/{model} has no GPU rule in {__file__}: add one")
    return GPU[model](cpu)


def render(model: str) -> str:
    config, why = gpu_config(model)
    header = [f"# GENERATED by scripts/gen_gpu_repository.py from model_repository/{model}/config.pbtxt;",
              "# edit that file or the generator, not this one.", *_wrap(why)]
    return "\n".join(header) + "\n" + mc.dumps(config)


def _wrap(text: str, width: int = 96) -> list[str]:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    return lines + [line]


def generate(out: str = DEFAULT_OUT, shared_dir: str | None = None) -> list[str]:
    """Writes the whole repository under `out` (replacing it); returns the model names. With
    shared_dir, the weights that the Python backends left here run (SCRFD) are copied in from
    it as scripts/link_models.py links them for the CPU repository."""
    models = cpu_models()
    if os.path.isdir(out):
        shutil.rmtree(out)
    for model in models:
        text = render(model)
        is_plan = 'platform: "tensorrt_plan"' in text
        src_version = os.path.join(CPU_REPO, model, "1")
        dst_version = os.path.join(out, model, "1")
        if is_plan or not os.path.isdir(src_version):
            os.makedirs(dst_version)
        else:
            # Python backends keep their code; symlinks become files so the folder can be mounted alone.
            shutil.copytree(src_version, dst_version, symlinks=False, ignore=SKIP_FILES)
        with open(os.path.join(out, model, "config.pbtxt"), "w") as f:
            f.write(text)
        if shared_dir and not is_plan:
            for link, source in link_models.LINKS.items():
                if link.startswith(f"{model}/"):
                    shutil.copyfile(os.path.join(shared_dir, source), os.path.join(out, link))
    return models


def engine_lines() -> list[str]:
    """model, onnx, input name:dims..., min/opt/max batch, fp16 (tab-separated), for build_engines.sh."""
    lines = []
    for model, engine in ENGINES.items():
        config, _ = gpu_config(model)
        max_batch = int(config.get("max_batch_size"))
        shapes = ",".join(f"{t.get('name')}:" + "x".join(t.get("dims")) for t in config.all("input"))
        lines.append("\t".join([model, engine.onnx, shapes, "1", str(engine.opt_batch), str(max_batch),
                                "fp16" if engine.fp16 else "fp32"]))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--shared-dir", help="copy the Python backends' weights from here (e.g. ../shared)")
    p.add_argument("--engines", action="store_true", help="print the plan build specs instead")
    a = p.parse_args(argv)
    if a.engines:
        print("\n".join(engine_lines()))
        return 0
    models = generate(a.out, a.shared_dir)
    print(f"wrote {len(models)} models to {a.out}: {', '.join(models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
