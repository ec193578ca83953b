#!/usr/bin/env python3
"""The one-shot GPU measurement of issue 20: box_embed on the GPU against the seed's Python BLS.

Steps, each with its own time budget inside one overall budget (the device runs one command
for at most 10 minutes):
  0. preflight: timm has the encoder architecture, torchvision has roi_align, numpy < 2, a
     CUDA device (all in the first seconds, so a broken image costs no device time);
  1. parity: tests/gpu/check_gpu_instances.py (KIND_GPU vs KIND_CPU box_embed) in a
     subprocess, its report in OUT/parity.txt and its server log in OUT/parity/;
  2. one tritonserver with the GPU encoder `clip_image` (benchmarks/models/clip_image_mci2:
     MobileCLIP2-S2 image tower, fp16, DLPack), box_embed and the baseline box_embed_bls
     (benchmarks/models/box_embed_bls) on KIND_GPU, plus preprocess, yolo and visual_ingest;
  3. box_embed vs box_embed_bls on the same real photos and boxes (benchmarks/box_embed_bench.py's
     inputs and client) at each concurrency: images/s, p50, p99, GPU memory, min cosine;
     optionally perf_analyzer on both with the same inputs (when its wheel is carried);
  4. visual_ingest with the GPU box_embed: single-image p50 and images/s at concurrency 8;
  5. OUT/benchmarks/results/box_embed_gpu.json, OUT/tritonserver.log.

`--cpu-dry-run` runs every step with the would-be GPU instances on the CPU (torch CPU,
KIND_CPU), to rehearse the script here; it measures nothing about the GPU.

    python tests/gpu/measure_gpu.py --out DIR [--cpu-dry-run] [--concurrency 1,8,32] ...

Exit status 0: every step ran and the implementations agree; 1: otherwise (the JSON is
written in any case with what was measured).
"""
from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(REPO_ROOT, "benchmarks"), os.path.join(REPO_ROOT, "scripts")]

import box_embed_bench as bench  # noqa: E402
from kserve_http import infer  # noqa: E402
from pipeline_bench import load, summary  # noqa: E402
from serverctl.triton import BACKEND_SO, TritonServer, _install_file, install_backends  # noqa: E402

MODELS = ["clip_image", "box_embed", "box_embed_bls", "preprocess", "yolo", "visual_ingest"]
INGEST_OUTPUTS = ["num_dets", "boxes", "embedding", "box_embeddings", "box_valid"]


class Budget:
    """The run's deadline; each step gets min(its own limit, what is left minus a reserve)."""

    def __init__(self, seconds: float, reserve: float):
        self.end = time.monotonic() + seconds
        self.reserve = reserve

    def left(self) -> float:
        return self.end - time.monotonic() - self.reserve

    def step(self, limit: float) -> float:
        return max(0.0, min(limit, self.left()))


# ---------------------------------------------------------------------------------------
# Preflight and the GPU

def preflight(arch: str, dry_run: bool) -> list[str]:
    """What the image must have; each problem as one clear line."""
    problems = []
    try:
        import timm
        if arch not in timm.list_models(arch):
            problems.append(f"timm {timm.__version__} has no '{arch}' (the MobileCLIP2-S2 tower is fastvit_mci2)")
    except ImportError as e:
        problems.append(f"timm not importable: {e}")
    try:
        import torchvision
        from torchvision.ops import roi_align  # noqa: F401
    except ImportError as e:
        problems.append(f"torchvision.ops.roi_align not importable (the baseline needs it): {e}")
    else:
        print(f"torchvision {torchvision.__version__}: roi_align available")
    if int(np.__version__.split(".")[0]) >= 2:
        problems.append(f"numpy {np.__version__} in this venv: the Python backend needs numpy < 2")
    try:
        import torch
        if not dry_run and not torch.cuda.is_available():
            problems.append("torch sees no CUDA device")
    except ImportError as e:
        problems.append(f"torch not importable: {e}")
    return problems


def nvidia_smi(*query: str) -> list[list[str]]:
    """Rows of `nvidia-smi --query-...=... --format=csv,noheader,nounits`; [] without one."""
    try:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def device_name(dry_run: bool) -> str:
    rows = nvidia_smi("--query-gpu=name,memory.total,driver_version")
    if dry_run or not rows:
        return f"CPU dry run on {bench.machine('cpu')} (no GPU measured)"
    name, total, driver = rows[0]
    return f"{name} ({int(total) / 1024:.0f} GiB, driver {driver}); {bench.machine('gpu')}"


def process_role(pid: str) -> str:
    """Which part of the server a GPU process is: the server itself (box_embed runs inside it)
    or the Python stub of one model."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return f"pid {pid}"
    text = b" ".join(args).decode(errors="replace")
    if "tritonserver" in os.path.basename(args[0].decode(errors="replace")):
        return "tritonserver (Triton + box_embed)"
    m = re.search(r"/([^/\s]+)/\d+/model\.py", text)
    return f"stub {m.group(1)}" if m else f"pid {pid}"


def per_process_mb() -> dict:
    """GPU memory of each compute process by role (empty where the driver shows none)."""
    result: dict = {}
    for pid, used in nvidia_smi("--query-compute-apps=pid,used_memory"):
        role = process_role(pid)
        result[role] = result.get(role, 0) + int(used)
    return result


class MemorySampler:
    """Peak of the GPU's used memory while `with` is open, sampled every 0.2 s."""

    def __init__(self):
        self.peak = None
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            rows = nvidia_smi("--query-gpu=memory.used")
            if rows:
                self.peak = max(self.peak or 0, int(rows[0][0]))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def used_mb() -> int | None:
    rows = nvidia_smi("--query-gpu=memory.used")
    return int(rows[0][0]) if rows else None


# ---------------------------------------------------------------------------------------
# Steps

def run_parity(a, budget: Budget) -> dict:
    limit = budget.step(a.parity_timeout)
    cmd = [sys.executable, os.path.join(HERE, "check_gpu_instances.py"), "--backend-so", a.backend_so,
           "--log-dir", os.path.join(a.out, "parity"), "--coco", str(a.parity_coco)]
    if a.cpu_dry_run:
        cmd.append("--cpu-dry-run")
    print(f"[parity] {' '.join(cmd[1:])} (limit {limit:.0f} s)", flush=True)
    started = time.monotonic()
    with open(os.path.join(a.out, "parity.txt"), "w") as report:
        try:
            rc = subprocess.run(cmd, stdout=report, stderr=subprocess.STDOUT, timeout=limit, cwd=REPO_ROOT).returncode
        except subprocess.TimeoutExpired:
            rc = None
    with open(os.path.join(a.out, "parity.txt")) as f:
        text = f.read()
    print(text.rstrip())
    verdict = next((line for line in reversed(text.splitlines())
                    if line.startswith(("PASSED", "FAILED", "SKIPPED"))), None)
    result = {"exit": rc, "verdict": verdict or ("timed out" if rc is None else "no verdict"),
              "seconds": round(time.monotonic() - started, 1)}
    print(f"[parity] {result}", flush=True)
    return result


def build_repository(repo: str, a) -> None:
    kind = "KIND_CPU" if a.cpu_dry_run else "KIND_GPU"
    ignore = shutil.ignore_patterns("__pycache__", "*.onnx")
    shutil.copytree(os.path.join(REPO_ROOT, "benchmarks", "models", "clip_image_mci2"),
                    os.path.join(repo, "clip_image"), ignore=ignore)
    shutil.copytree(os.path.join(REPO_ROOT, "benchmarks", "models", "box_embed_bls"),
                    os.path.join(repo, "box_embed_bls"), ignore=ignore)
    for name in ("box_embed", "preprocess", "yolo", "visual_ingest"):
        # copytree follows links: yolo's shared onnx_stand_in.py arrives as a file.
        shutil.copytree(os.path.join(REPO_ROOT, "model_repository", name), os.path.join(repo, name), ignore=ignore)
    shutil.copy(a.yolo_onnx, os.path.join(repo, "yolo", "1", "model.onnx"))
    for name in ("clip_image", "box_embed", "box_embed_bls"):
        bench.set_instance_kind(os.path.join(repo, name, "config.pbtxt"), kind)
    config = os.path.join(repo, "clip_image", "config.pbtxt")
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(re.sub(r'(key: "timm_model" value \{ string_value: ")[^"]+', rf"\g<1>{a.encoder_arch}", text))


def measured_count(rate: float, c: int, a) -> int:
    return int(min(a.max_requests, max(a.min_requests, 2 * c, rate * a.seconds)))


def run_benchmark(server, client, a, budget: Budget) -> tuple[list, dict, float, int]:
    min_cosine, rows_checked = bench.check_equal(client)  # doubles as the first warm-up
    print(f"[bench] min cosine {min_cosine:.8f} over {rows_checked} rows", flush=True)
    rows = []
    memory = {"after_load_used_mb": used_mb(), "processes_after_load_mb": per_process_mb()}
    for c in a.levels:
        for impl in bench.IMPLS:
            if budget.left() < a.ingest_seconds + 20:
                print(f"[bench] budget: skipping {impl} c={c} ({budget.left():.0f} s left)", flush=True)
                continue
            warm = max(2 * c, a.min_requests)
            wall, _ = client.run(impl, c, warm)
            count = measured_count(warm / wall, c, a)
            with MemorySampler() as sampler:
                wall, lat = client.run(impl, c, count, start=c)
            row = {"impl": impl, "concurrency": c, "images_per_s": round(count / wall, 2),
                   "p50_ms": round(float(np.percentile(lat, 50)), 2),
                   "p99_ms": round(float(np.percentile(lat, 99)), 2), "requests": count}
            rows.append(row)
            peak = memory.setdefault(impl, {"peak_used_mb": None})
            if sampler.peak is not None:
                peak["peak_used_mb"] = max(peak["peak_used_mb"] or 0, sampler.peak)
            print(f"  {impl:>10} c={c:<3} {row['images_per_s']:8.1f} img/s  p50 {row['p50_ms']:8.1f} ms  "
                  f"p99 {row['p99_ms']:8.1f} ms  ({count} requests; GPU used peak {sampler.peak} MB)", flush=True)
    memory["processes_after_bench_mb"] = per_process_mb()
    if memory["after_load_used_mb"] is None:
        memory = {"unavailable": "nvidia-smi gave no reading"}
    return rows, memory, min_cosine, rows_checked


def perf_analyzer_inputs(cases: list[dict], path: str) -> None:
    """perf_analyzer's --input-data file: the benchmark's photos and boxes, one entry each."""
    data = []
    for case in cases:
        entry = {}
        for name, array in case["inputs"].items():
            array = np.ascontiguousarray(array[0])
            if array.dtype == np.uint8:
                entry[name] = {"b64": base64.b64encode(array.tobytes()).decode(), "shape": list(array.shape)}
            else:
                entry[name] = {"content": array.reshape(-1).tolist(), "shape": list(array.shape)}
        data.append(entry)
    with open(path, "w") as f:
        json.dump({"data": data}, f)


def run_perf_analyzer(server, cases, a, budget: Budget) -> dict:
    wheels = glob.glob(os.path.join(a.perf_analyzer_dir, "perf_analyzer-*.whl")) if a.perf_analyzer_dir else []
    if not wheels:
        return {"skipped": "no perf_analyzer wheel carried"}
    site = tempfile.mkdtemp(prefix="perf-analyzer-")
    try:
        return _perf_analyzer(site, wheels[0], server, cases, a, budget)
    finally:
        shutil.rmtree(site, ignore_errors=True)


def _perf_analyzer(site: str, wheel_path: str, server, cases, a, budget: Budget) -> dict:
    # The wheel holds one executable; the device venv has no pip to install it with.
    with zipfile.ZipFile(wheel_path) as wheel:
        binary = wheel.extract("perf_analyzer/bin/perf_analyzer", site)
    os.chmod(binary, 0o755)
    inputs = os.path.join(site, "inputs.json")
    perf_analyzer_inputs(cases, inputs)
    result = {}
    with open(os.path.join(a.out, "perf_analyzer.txt"), "w") as log:
        for impl, (model, _) in bench.IMPLS.items():
            limit = budget.step(a.perf_analyzer_timeout)
            if limit < 15:
                result[impl] = "skipped: budget"
                continue
            cmd = [binary, "-m", model, "-u", f"127.0.0.1:{server.http_port}", "-i", "http",
                   "--input-data", inputs, "--concurrency-range", f"{a.perf_analyzer_concurrency}",
                   "--measurement-interval", "3000", "--max-trials", "4", "--stability-percentage", "50"]
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
                log.write(out.stdout + out.stderr + "\n")
                m = re.search(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec, latency (\d+) usec", out.stdout)
                result[impl] = ({"images_per_s": float(m.group(1)), "avg_latency_ms": int(m.group(2)) / 1e3}
                                if m else f"no result (exit {out.returncode})")
            except subprocess.TimeoutExpired:
                result[impl] = f"timed out after {limit:.0f} s"
            print(f"[perf_analyzer] {impl}: {result[impl]}", flush=True)
    return result


def run_ingest(server, photos: list[bytes], a, budget: Budget) -> dict:
    def one(i):
        r = infer(server.http_url, "visual_ingest", {"image": np.frombuffer(photos[i % len(photos)], np.uint8)[None]},
                  INGEST_OUTPUTS)
        if not r.ok:
            raise RuntimeError(f"visual_ingest failed: HTTP {r.status}: {r.error}")

    load(one, a.ingest_warmup, 8)
    wall, lat = load(one, a.ingest_single, 1)
    single = summary(wall, lat)
    warm_wall, _ = load(one, a.ingest_warmup, 8)
    rate = a.ingest_warmup / warm_wall
    count = int(min(a.max_requests, max(a.min_requests, rate * budget.step(a.ingest_seconds))))
    row = summary(*load(one, count, 8))
    result = {"concurrency": 8, **row, "requests": count, "single_image_p50_ms": single["p50_ms"],
              "single_image_p99_ms": single["p99_ms"], "single_image_requests": a.ingest_single}
    print(f"[ingest] {result}", flush=True)
    return result


def targets(rows: list[dict], min_cosine: float | None) -> dict:
    """Issue 20's targets against what was measured: Rust >= 5x the baseline's images/s at
    concurrency 32, a lower p99 at every concurrency, cosine >= 0.999."""
    by = {(r["impl"], r["concurrency"]): r for r in rows}
    levels = sorted({c for _, c in by if ("rust", c) in by and ("python_bls", c) in by})
    speedup = {c: round(by["rust", c]["images_per_s"] / by["python_bls", c]["images_per_s"], 2) for c in levels}
    return {"speedup": speedup, "speedup_5x_at_32": speedup[32] >= 5 if 32 in speedup else None,
            "p99_lower_at_every_level": all(by["rust", c]["p99_ms"] < by["python_bls", c]["p99_ms"] for c in levels)
            if levels else None,
            "cosine_0_999": None if min_cosine is None else min_cosine >= bench.MIN_COSINE}


# ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(REPO_ROOT, ".cache", "gpu-bench", "out"))
    p.add_argument("--cpu-dry-run", action="store_true", help="would-be GPU instances on the CPU (rehearsal)")
    p.add_argument("--backend-so", default=os.environ.get("BOX_EMBED_SO", BACKEND_SO))
    p.add_argument("--preprocess-so", default=os.environ.get("PREPROCESS_SO"))
    p.add_argument("--yolo-onnx", default=os.environ.get("YOLO_ONNX"))
    p.add_argument("--coco-dir", default=os.environ.get("COCO_SUBSET_DIR", bench.COCO_DIR))
    p.add_argument("--perf-analyzer-dir", default=os.environ.get("PERF_ANALYZER_DIR"),
                   help="folder holding the perf_analyzer-2.60.0 wheel (optional step)")
    p.add_argument("--encoder-arch", default="fastvit_mci2", help="timm model of the encoder")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--photos", type=int, default=0, help="use the first N benchmark photos (0: all)")
    p.add_argument("--min-annotations", type=int, default=8)
    p.add_argument("--max-boxes", type=int, default=10)
    p.add_argument("--seconds", type=float, default=5.0, help="target length of each measured run")
    p.add_argument("--min-requests", type=int, default=16)
    p.add_argument("--max-requests", type=int, default=2000)
    # 330 s here + the device venv's set-up: about 6 minutes, so a rerun fits the 15 minutes too.
    p.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run")
    p.add_argument("--parity-timeout", type=float, default=120.0)
    p.add_argument("--parity-coco", type=int, default=8, help="COCO photos in the parity check")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--server-timeout", type=float, default=150.0)
    p.add_argument("--perf-analyzer-timeout", type=float, default=30.0)
    p.add_argument("--perf-analyzer-concurrency", type=int, default=8)
    p.add_argument("--ingest-seconds", type=float, default=10.0)
    p.add_argument("--ingest-warmup", type=int, default=16, help="requests at concurrency 8 before measuring")
    p.add_argument("--ingest-single", type=int, default=20, help="requests at concurrency 1 for the p50")
    a = p.parse_args(argv)
    a.levels = [int(c) for c in a.concurrency.split(",")]
    a.out = os.path.abspath(a.out)
    budget = Budget(a.budget, reserve=15.0)
    started = time.monotonic()
    os.makedirs(a.out, exist_ok=True)
    for what, path in (("--backend-so", a.backend_so), ("--preprocess-so", a.preprocess_so),
                       ("--yolo-onnx", a.yolo_onnx), ("--coco-dir", a.coco_dir)):
        if not path or not os.path.exists(path):
            print(f"FAIL: {what} {path!r} does not exist")
            return 1

    problems = preflight(a.encoder_arch, a.cpu_dry_run)
    for problem in problems:
        print(f"FAIL: preflight: {problem}")
    if problems:
        return 1
    device = device_name(a.cpu_dry_run)
    print(f"device: {device}", flush=True)
    result = {"device": device, "rows": [], "gpu_mem_mb": {}, "min_cosine": None, "ingest": {},
              "encoder": f"timm {a.encoder_arch}, head to 512, reparameterised, random weights (seed 0), "
                         f"{'fp32 on the CPU' if a.cpu_dry_run else 'fp16 on the GPU'}, one instance",
              "inputs": {}, "steps_s": {}, "cpu_dry_run": a.cpu_dry_run}
    failures = []

    if not a.skip_parity:
        result["parity"] = run_parity(a, budget)
        if result["parity"]["exit"] != 0:
            failures.append(f"parity: {result['parity']['verdict']}")
        result["steps_s"]["parity"] = result["parity"]["seconds"]

    bench.COCO_DIR = a.coco_dir
    cases = bench.load_cases(a.min_annotations, a.max_boxes)
    if a.photos:
        cases = cases[:a.photos]
    boxes = sum(c["n"] for c in cases)
    pixels = [c["inputs"]["original"].shape[1] * c["inputs"]["original"].shape[2] for c in cases]
    result["inputs"] = {"photos": len(cases), "boxes": boxes, "megapixels": [round(min(pixels) / 1e6, 2),
                                                                             round(max(pixels) / 1e6, 2)],
                        "source": "COCO val2017 photos (full-resolution JPEGs) and their annotated boxes, "
                                  "largest first"}
    photos = []
    for case in cases:
        with open(os.path.join(a.coco_dir, "images", case["name"]), "rb") as f:
            photos.append(f.read())
    print(f"{len(cases)} photos, {boxes} boxes ({boxes / len(cases):.1f} per photo)", flush=True)

    work = tempfile.mkdtemp(prefix="box-embed-gpu-measure-")
    repo, backends = os.path.join(work, "models"), os.path.join(work, "backends")
    for note in install_backends(backends, backend_so=a.backend_so):
        if not note.startswith("preprocess"):  # installed from --preprocess-so below
            print(note)
    _install_file(a.preprocess_so, os.path.join(backends, "preprocess", "libtriton_preprocess.so"))
    build_repository(repo, a)
    server = TritonServer(repo, MODELS, backend_dir=backends, log_path=os.path.join(a.out, "tritonserver.log"))
    t0 = time.monotonic()
    server.start()
    try:
        server.wait_ready(timeout=budget.step(a.server_timeout))
        result["steps_s"]["server_start"] = round(time.monotonic() - t0, 1)
        print(f"[server] ready in {result['steps_s']['server_start']} s; log {server.log_path}", flush=True)
        client = bench.Client(server.http_url, cases)

        t0 = time.monotonic()
        rows, memory, min_cosine, rows_checked = run_benchmark(server, client, a, budget)
        result.update(rows=rows, gpu_mem_mb=memory, min_cosine=round(min_cosine, 8), rows_compared=rows_checked)
        result["steps_s"]["benchmark"] = round(time.monotonic() - t0, 1)
        if min_cosine < bench.MIN_COSINE:
            failures.append(f"min cosine {min_cosine:.6f} < {bench.MIN_COSINE}")

        t0 = time.monotonic()
        if budget.left() > a.ingest_seconds + 20:
            result["ingest"] = run_ingest(server, photos, a, budget)
        else:
            failures.append("ingest skipped: budget")
        result["steps_s"]["ingest"] = round(time.monotonic() - t0, 1)

        t0 = time.monotonic()
        result["perf_analyzer"] = run_perf_analyzer(server, cases, a, budget)
        result["steps_s"]["perf_analyzer"] = round(time.monotonic() - t0, 1)

        with open(server.log_path, errors="replace") as f:
            log = f.read()
        result["encoder_input_memory"] = sorted(set(re.findall(r"clip_image: input 'images' arrived in (\w+) memory",
                                                               log)))
        if not server.alive() or server.crash_lines():
            failures.append(f"server died or crashed: {server.crash_lines()[:5]}")
    except Exception as e:  # the JSON keeps what was measured before
        failures.append(f"{type(e).__name__}: {e}")
    finally:
        print(f"tritonserver: {server.stop()}")
        shutil.rmtree(work, ignore_errors=True)

    result["targets"] = targets(result["rows"], result["min_cosine"])
    result["steps_s"]["total"] = round(time.monotonic() - started, 1)
    result["failures"] = failures
    path = os.path.join(a.out, "benchmarks", "results", "box_embed_gpu.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if result["rows"]:
        print()
        print(bench.markdown(result["rows"], result["min_cosine"]))
    print(f"\ngpu_mem_mb: {json.dumps(result['gpu_mem_mb'])}")
    print(f"ingest: {json.dumps(result['ingest'])}")
    print(f"targets: {json.dumps(result['targets'])}")
    print(f"wrote {path} in {result['steps_s']['total']:.0f} s")
    for failure in failures:
        print(f"FAIL: {failure}")
    verdict = "PASSED" if not failures else f"FAILED: {len(failures)} problems"
    print(f"{verdict}{' (CPU dry run: the GPU path was NOT exercised)' if a.cpu_dry_run else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
