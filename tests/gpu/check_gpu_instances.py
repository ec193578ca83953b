#!/usr/bin/env python3
"""Check box_embed's KIND_GPU instances against its KIND_CPU instances in one real Triton.

One server, one temporary model repository:
- `box_embed_cpu_<policy>`: KIND_CPU, encoder `clip_image` (the ONNX stand-in, CPU);
- `box_embed_gpu_<policy>`: KIND_GPU, encoder `clip_image_gpu` (the same encoder in PyTorch
  on the GPU, tests/gpu/models/clip_image_torch.py: crops in, embeddings out, GPU memory);
- `box_embed_gpu_onnx` (GPU instance, CPU encoder: host encoder outputs),
  `box_embed_gpu_chunked` (encoder_max_batch 4: many chunks per execute) and
  `box_embed_gpu_ens` (ensemble box_embed_gpu_stretch -> passthrough_gpu, so box_embed's
  outputs are intermediate tensors that Triton may place in GPU memory).

Every GPU model must return, for the same requests sent concurrently (so executes batch
several images of different sizes), the same `box_valid` as the CPU instance and embeddings
with cosine >= 0.9999 per valid row; invalid rows all zero. Bad requests must get their own
HTTP 400 naming the problem while good ones in the same burst succeed. The server log must
show no crash, and that the GPU encoder received its crops in GPU memory.

Without a GPU it checks only that a KIND_GPU instance fails its load with a clear error
while the server keeps serving, prints SKIPPED and exits 0. `--cpu-dry-run` runs the whole
check with every would-be GPU instance on the CPU instead, to test this script and its
models without a GPU (it says nothing about the GPU path; needs torch in TRITON_VENV).

    python tests/gpu/check_gpu_instances.py [--backend-so PATH] [--coco N] [--keep] [--cpu-dry-run]

The server comes from TRITON_VENV (default .venv; scripts/gpu/device_env.sh builds one on
the GPU machine). Exit status 0: passed or skipped; 1: a check failed.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO_ROOT = os.path.dirname(TESTS)
sys.path[:0] = [TESTS, os.path.join(REPO_ROOT, "scripts")]

import gen_encoders  # noqa: E402
from conftest import read_config, set_field, set_parameter  # noqa: E402
from kserve_http import infer  # noqa: E402
from letterbox import to_letterbox, yolo_letterbox  # noqa: E402
from serverctl.triton import BACKEND_SO, TritonServer, install_backends  # noqa: E402

POLICIES = ("stretch", "pad", "context")
OUTPUTS = ["box_embeddings", "box_valid"]
MIN_COS = 0.9999
SOURCE = os.path.join(REPO_ROOT, "model_repository")
COCO_DIR = os.environ.get("COCO_SUBSET_DIR", os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "coco_val2017_subset")))


def gpu_count() -> tuple[int, str]:
    """CUDA devices the driver reports, and why none where there are none."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "libcuda.so.1 not found (no NVIDIA driver)"
    if cuda.cuInit(0) != 0:
        return 0, "cuInit failed"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "the driver reports no CUDA device"
    return count.value, ""


# ---------------------------------------------------------------------------------------
# Model repository

def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# The kind of every would-be GPU instance; KIND_CPU under --cpu-dry-run.
GPU_KIND = "KIND_GPU"


def _kind_gpu(text: str) -> str:
    assert text.count("kind: KIND_CPU") == 1, "expected one KIND_CPU instance group"
    return text.replace("kind: KIND_CPU", f"kind: {GPU_KIND}")


def _keep_gpu_inputs(text: str) -> str:
    # The Python backend hands GPU inputs to the model as they are only when told to.
    return text + 'parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "no" } }\n'


def box_embed_variant(repo: str, name: str, gpu: bool, policy: str, encoder: str, params: dict | None = None):
    text = set_field(read_config(os.path.join(SOURCE, "box_embed")), "name", f'"{name}"')
    text = set_parameter(set_parameter(text, "crop_policy", policy), "encoder_model", encoder)
    if params:
        # Parameters the source config does not set are appended.
        text += "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    _write(os.path.join(repo, name, "config.pbtxt"), _kind_gpu(text) if gpu else text)
    os.makedirs(os.path.join(repo, name, "1"), exist_ok=True)


def build_repository(repo: str, with_gpu: bool) -> dict:
    """Writes the models; returns {gpu model: cpu model to compare with} (empty without GPU)."""
    gen_encoders.generate()
    shutil.copytree(os.path.join(SOURCE, "clip_image"), os.path.join(repo, "clip_image"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for policy in POLICIES:
        box_embed_variant(repo, f"box_embed_cpu_{policy}", False, policy, "clip_image")
    box_embed_variant(repo, "box_embed_gpu_stretch", True, "stretch", "clip_image_gpu")
    if not with_gpu:
        return {}

    gpu_encoder = os.path.join(repo, "clip_image_gpu")
    text = set_field(read_config(os.path.join(SOURCE, "clip_image")), "name", '"clip_image_gpu"')
    _write(os.path.join(gpu_encoder, "config.pbtxt"), _keep_gpu_inputs(_kind_gpu(text)))
    os.makedirs(os.path.join(gpu_encoder, "1"))
    shutil.copy(os.path.join(HERE, "models", "clip_image_torch.py"), os.path.join(gpu_encoder, "1", "model.py"))
    shutil.copy(gen_encoders.DEFAULT_OUT, os.path.join(gpu_encoder, "1", "model.onnx"))

    pairs = {}
    for policy in POLICIES:
        if policy != "stretch":
            box_embed_variant(repo, f"box_embed_gpu_{policy}", True, policy, "clip_image_gpu")
        pairs[f"box_embed_gpu_{policy}"] = f"box_embed_cpu_{policy}"
    box_embed_variant(repo, "box_embed_gpu_onnx", True, "stretch", "clip_image")
    box_embed_variant(repo, "box_embed_gpu_chunked", True, "stretch", "clip_image_gpu", {"encoder_max_batch": "4"})
    pairs["box_embed_gpu_onnx"] = pairs["box_embed_gpu_chunked"] = "box_embed_cpu_stretch"
    write_ensemble(repo)
    pairs["box_embed_gpu_ens"] = "box_embed_cpu_stretch"
    return pairs


def write_ensemble(repo: str) -> None:
    source = read_config(os.path.join(SOURCE, "box_embed"))
    dim = re.search(r'key: "embedding_dim" value \{ string_value: "(\d+)"', source).group(1)
    inputs = re.search(r"^input \[.*?^\]", source, re.S | re.M).group(0)
    # The ensemble feeds only the required inputs; box_embed's optional image_size stays unset.
    inputs = re.sub(r",\s*\{[^{}]*optional: true[^{}]*\}", "", inputs)
    def tensors_block(section: str, suffix: str) -> str:
        return (f'{section} [\n  {{ name: "box_embeddings{suffix}" data_type: TYPE_FP32 dims: [ -1, {dim} ] }},\n'
                f'  {{ name: "box_valid{suffix}" data_type: TYPE_BOOL dims: [ -1 ] }}\n]\n')

    passthrough = ('name: "passthrough_gpu"\nbackend: "python"\nmax_batch_size: 8\n'
                   + tensors_block("input", "_in") + tensors_block("output", "_out")
                   + f"instance_group [ {{ count: 1 kind: {GPU_KIND} }} ]\n")
    _write(os.path.join(repo, "passthrough_gpu", "config.pbtxt"), _keep_gpu_inputs(passthrough))
    os.makedirs(os.path.join(repo, "passthrough_gpu", "1"))
    shutil.copy(os.path.join(HERE, "models", "passthrough_gpu.py"),
                os.path.join(repo, "passthrough_gpu", "1", "model.py"))

    maps = "".join(f'      input_map {{ key: "{n}" value: "{n}" }}\n'
                   for n in re.findall(r'name: "([^"]+)"', inputs))
    ensemble = (f'name: "box_embed_gpu_ens"\nplatform: "ensemble"\nmax_batch_size: 8\n{inputs}\n'
                + tensors_block("output", "")
                + "ensemble_scheduling {\n  step [\n"
                + '    {\n      model_name: "box_embed_gpu_stretch"\n      model_version: -1\n' + maps
                + '      output_map { key: "box_embeddings" value: "emb" }\n'
                + '      output_map { key: "box_valid" value: "valid" }\n    },\n'
                + '    {\n      model_name: "passthrough_gpu"\n      model_version: -1\n'
                + '      input_map { key: "box_embeddings_in" value: "emb" }\n'
                + '      input_map { key: "box_valid_in" value: "valid" }\n'
                + '      output_map { key: "box_embeddings_out" value: "box_embeddings" }\n'
                + '      output_map { key: "box_valid_out" value: "box_valid" }\n    }\n  ]\n}\n')
    _write(os.path.join(repo, "box_embed_gpu_ens", "config.pbtxt"), ensemble)
    os.makedirs(os.path.join(repo, "box_embed_gpu_ens", "1"))


# ---------------------------------------------------------------------------------------
# Requests

def synthetic_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradients, a checkerboard and noise: detail everywhere, so crop shifts show."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    board = ((x // 7 + y // 5) % 2) * 160
    image = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), board], -1)
    image += rng.normal(0, 24, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_case(rng: np.random.Generator, h: int, w: int, n: int, pad_rows: int = 0) -> dict:
    """`n` random boxes plus awkward ones (degenerate, outside, edge, whole image, NaN)."""
    image = synthetic_image(rng, h, w)
    lb = yolo_letterbox(w, h)
    x1, y1 = rng.uniform(-0.1 * w, w, n), rng.uniform(-0.1 * h, h, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.5, 0.6 * w + 2, n), y1 + rng.uniform(0.5, 0.6 * h + 2, n)], 1)
    awkward = np.array([[0, 0, w, h], [w * 0.3, h * 0.3, w * 0.3, h * 0.6], [w + 5, h + 5, w + 40, h + 40],
                        [-20, -20, w * 0.5, h * 0.5], [w - 3, h - 3, w, h]], np.float64)
    rows = to_letterbox(np.concatenate([boxes, awkward]) if n else awkward, lb)
    rows = np.concatenate([rows, [[np.nan, 10, 20, 30]], np.zeros((pad_rows, 4))]).astype(np.float32)
    return {"original": image[None], "det_boxes": rows[None], "num_dets": np.array([[len(rows) - pad_rows]], np.int32),
            "letterbox": lb.reshape(1, 3).astype(np.float32), "label": f"{w}x{h} n={len(rows) - pad_rows}"}


def coco_cases(count: int) -> list[dict]:
    path = os.path.join(COCO_DIR, "instances_val2017_subset.json")
    if count <= 0 or not os.path.exists(path):
        return []
    import json

    from PIL import Image

    with open(path) as f:
        data = json.load(f)
    boxes: dict = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    cases = []
    for im in sorted(data["images"], key=lambda i: i["id"])[:count]:
        with Image.open(os.path.join(COCO_DIR, "images", im["file_name"])) as f:
            image = np.ascontiguousarray(np.asarray(f.convert("RGB"), np.uint8))
        lb = yolo_letterbox(image.shape[1], image.shape[0])
        rows = to_letterbox(np.array(boxes.get(im["id"], []), np.float64).reshape(-1, 4), lb).astype(np.float32)
        cases.append({"original": image[None], "det_boxes": rows[None].reshape(1, -1, 4),
                      "num_dets": np.array([[len(rows)]], np.int32), "letterbox": lb.reshape(1, 3).astype(np.float32),
                      "label": im["file_name"]})
    return cases


def all_cases(coco: int) -> list[dict]:
    rng = np.random.default_rng(7)
    shapes = [(426, 640, 12), (333, 517, 9), (1080, 1920, 30), (37, 53, 4), (720, 1280, 0), (640, 480, 90),
              (1, 1, 2), (500, 375, 40)]
    cases = [synthetic_case(rng, h, w, n, pad_rows=3 if i % 3 == 0 else 0) for i, (h, w, n) in enumerate(shapes)]
    return cases + coco_cases(coco)


def tensors(case: dict) -> dict:
    return {k: v for k, v in case.items() if k != "label"}


# Bad requests, and the words of which the error must name one.
BAD = {
    "num_dets_gt_rows": ("num_dets",),
    "negative_num_dets": ("num_dets",),
    "scale_zero": ("letterbox", "scale"),
    "scale_nan": ("letterbox", "scale"),
    "empty_image": ("original", "image"),
}


def spoil(case: dict, kind: str) -> dict:
    bad = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.items()}
    if kind == "num_dets_gt_rows":
        bad["num_dets"][...] = bad["det_boxes"].shape[1] + 1
    elif kind == "negative_num_dets":
        bad["num_dets"][...] = -1
    elif kind == "scale_zero":
        bad["letterbox"][0, 0] = 0.0
    elif kind == "scale_nan":
        bad["letterbox"][0, 0] = np.nan
    elif kind == "empty_image":
        bad["original"] = np.zeros((1, 0, 640, 3), np.uint8)
    bad["label"] = kind
    return bad


# ---------------------------------------------------------------------------------------
# Checks

def compare(gpu, cpu, tag: str, stats: dict) -> list[str]:
    if not (gpu.ok and cpu.ok):
        return [f"{tag}: request failed: gpu {gpu.status} {gpu.error} / cpu {cpu.status} {cpu.error}"]
    ge, gv = gpu.outputs["box_embeddings"], gpu.outputs["box_valid"]
    ce, cv = cpu.outputs["box_embeddings"], cpu.outputs["box_valid"]
    if ge.shape != ce.shape or gv.shape != cv.shape:
        return [f"{tag}: shapes {ge.shape} {gv.shape} vs CPU {ce.shape} {cv.shape}"]
    ge, gv, ce, cv = ge[0].astype(np.float64), gv[0], ce[0].astype(np.float64), cv[0]
    problems = []
    if not np.array_equal(gv, cv):
        problems.append(f"{tag}: box_valid differs at rows {np.flatnonzero(gv != cv).tolist()}")
    if np.any(ge[~gv] != 0):
        problems.append(f"{tag}: invalid rows not all zero")
    both = gv & cv
    if both.any():
        cos = (ge[both] * ce[both]).sum(1) / np.maximum(
            np.linalg.norm(ge[both], axis=1) * np.linalg.norm(ce[both], axis=1), 1e-30)
        stats["rows"] += int(both.sum())
        stats["min_cos"] = min(stats["min_cos"], float(cos.min()))
        stats["max_abs"] = max(stats["max_abs"], float(np.abs(ge[both] - ce[both]).max()))
        low = np.flatnonzero(~(cos >= MIN_COS))
        if len(low):
            problems.append(f"{tag}: {len(low)} rows with cosine < {MIN_COS}, worst {cos.min():.6f}")
    return problems


def run_pairs(url: str, pairs: dict, cases: list[dict]) -> tuple[list[str], dict]:
    jobs = [(m, i) for i in range(len(cases)) for m in sorted(set(pairs) | set(pairs.values()))]
    random.Random(3).shuffle(jobs)  # executes then mix image sizes and models
    session_per_thread = {}

    def one(job):
        model, i = job
        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        return job, infer(url, model, tensors(cases[i]), OUTPUTS, session=session)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = dict(pool.map(one, jobs))
    problems, stats = [], {}
    for gpu_model, cpu_model in sorted(pairs.items()):
        s = stats.setdefault(gpu_model, {"rows": 0, "min_cos": 1.0, "max_abs": 0.0})
        for i, case in enumerate(cases):
            problems += compare(results[(gpu_model, i)], results[(cpu_model, i)], f"{gpu_model} [{case['label']}]", s)
    return problems, stats


def run_bad_requests(url: str, model: str, cpu_model: str, cases: list[dict]) -> list[str]:
    """Each bad request in a burst with good ones: its own 400, the good ones unharmed."""
    good = cases[:3]
    problems = []
    for name, words in BAD.items():
        bad = spoil(good[0], name)
        burst = [(model, bad)] + [(model, c) for c in good] + [(cpu_model, c) for c in good]
        with concurrent.futures.ThreadPoolExecutor(len(burst)) as pool:
            results = list(pool.map(lambda mc: infer(url, mc[0], tensors(mc[1]), OUTPUTS), burst))
        r = results[0]
        if r.status != 400 or not r.error or not any(w in r.error.lower() for w in words):
            problems.append(f"bad request {name}: expected HTTP 400 naming {words}, got {r.status}: {r.error!r}")
        scratch = {"rows": 0, "min_cos": 1.0, "max_abs": 0.0}
        for k, c in enumerate(good):
            problems += compare(results[1 + k], results[1 + len(good) + k],
                                f"good beside {name} [{c['label']}]", scratch)
    return problems


def batch_sizes(url: str, model: str) -> str:
    stats = requests.get(f"{url}/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]
    sizes = sorted(int(b["batch_size"]) for b in stats.get("batch_stats", []))
    return f"{stats['inference_count']} requests in {stats['execution_count']} executes (batch sizes {sizes})"


def check_without_gpu(server, reason: str) -> int:
    url = server.http_url
    load = requests.post(f"{url}/v2/repository/models/box_embed_gpu_stretch/load", timeout=120)
    requests.post(f"{url}/v2/repository/models/box_embed_gpu_stretch/unload", timeout=60)
    problems = []
    if load.status_code == 200:
        problems.append("a KIND_GPU box_embed instance loaded on a machine without a GPU")
    elif "gpu" not in load.text.lower():
        problems.append(f"the failed KIND_GPU load does not say why: {load.text}")
    case = all_cases(0)[0]
    r = infer(url, "box_embed_cpu_stretch", tensors(case), OUTPUTS)
    if not r.ok:
        problems.append(f"the server stopped serving after the failed load: {r.status} {r.error}")
    if not server.alive() or server.crash_lines():
        problems.append(f"the server crashed: {server.crash_lines()[:5]}")
    for p in problems:
        print(f"FAIL: {p}")
    if problems:
        return 1
    print(f"ok: KIND_GPU load refused cleanly ({load.text.strip()[:200]}); the server keeps serving")
    print(f"SKIPPED: GPU instance checks: {reason}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend-so", default=BACKEND_SO)
    p.add_argument("--coco", type=int, default=8, help="COCO photos to add when the subset is present")
    p.add_argument("--log-dir", default=os.path.join(REPO_ROOT, ".cache", "triton", "gpu-check"))
    p.add_argument("--keep", action="store_true", help="keep the temporary model repository")
    p.add_argument("--cpu-dry-run", action="store_true", help="would-be GPU instances on the CPU (tests the script)")
    a = p.parse_args(argv)
    global GPU_KIND
    if a.cpu_dry_run:
        GPU_KIND = "KIND_CPU"
    if not os.path.exists(a.backend_so):
        print(f"FAIL: {a.backend_so} missing: cargo build --release -p box-embed-backend")
        return 1

    gpus, reason = (1, "") if a.cpu_dry_run else gpu_count()
    work = tempfile.mkdtemp(prefix="box-embed-gpu-check-")
    repo, backends = os.path.join(work, "models"), os.path.join(work, "backends")
    install_backends(backends, backend_so=a.backend_so)
    pairs = build_repository(repo, with_gpu=gpus > 0)
    models = ["clip_image", *[f"box_embed_cpu_{p}" for p in POLICIES]]
    if gpus:
        models += ["clip_image_gpu", "passthrough_gpu", *pairs]
    os.makedirs(a.log_dir, exist_ok=True)
    server = TritonServer(repo, models, backend_dir=backends,
                                    log_path=os.path.join(a.log_dir, "tritonserver.log"))
    print(f"tritonserver log: {server.log_path}")
    server.start()
    try:
        server.wait_ready(timeout=300)
        if not gpus:
            return check_without_gpu(server, reason)

        cases = all_cases(a.coco)
        start = time.monotonic()
        problems, stats = run_pairs(server.http_url, pairs, cases)
        print(f"{len(cases)} cases x {len(pairs) + len(set(pairs.values()))} models "
              f"in {time.monotonic() - start:.1f} s")
        for model, s in sorted(stats.items()):
            print(f"  {model:24s} vs {pairs[model]:22s}: {s['rows']} valid rows, min cosine {s['min_cos']:.7f}, "
                  f"max |diff| {s['max_abs']:.2e}; {batch_sizes(server.http_url, model)}")
        problems += run_bad_requests(server.http_url, "box_embed_gpu_stretch", "box_embed_cpu_stretch", cases)

        with open(server.log_path, errors="replace") as f:
            log = f.read()
        crops_in = set(re.findall(r"clip_image_gpu: input 'images' arrived in (\w+) memory", log))
        print(f"  clip_image_gpu received crops in: {sorted(crops_in)} memory")
        if crops_in != {"GPU"} and not a.cpu_dry_run:
            problems.append("clip_image_gpu did not receive every crop in GPU memory")
        where = re.findall(r"passthrough_gpu: input 'box_embeddings_in' arrived in (\w+) memory", log)
        print(f"  box_embed_gpu_stretch outputs inside the ensemble were placed in: {where or 'unknown'} memory")
        if not server.alive() or server.crash_lines():
            problems.append(f"server died or crashed: {server.crash_lines()[:5]}")
        for problem in problems[:40]:
            print(f"FAIL: {problem}")
        verdict = "PASSED" if not problems else f"FAILED: {len(problems)} problems"
        print(f"{verdict}{' (CPU dry run: the GPU path was NOT exercised)' if a.cpu_dry_run else ''}")
        return 1 if problems else 0
    finally:
        server.stop()
        if a.keep:
            print(f"model repository kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
