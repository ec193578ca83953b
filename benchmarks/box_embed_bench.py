#!/usr/bin/env python3
"""Benchmark the Rust box_embed backend against the seed-style Python BLS baseline.

One tritonserver (scripts/serverctl) serves clip_image, box_embed and box_embed_bls from
a temporary model repository. Both per-object models get the same requests: COCO photos
with their annotated boxes in letterbox pixels, padded to the detector's fixed K rows. The
run checks that the two agree (min cosine over valid rows), then measures throughput and
latency at each concurrency, both models back to back per level, and writes
benchmarks/results/box_embed_<device>.json plus a markdown table.

Run through benchmarks/run.sh (setup, build, this script); see benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests
from PIL import Image

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import gen_encoders  # noqa: E402
from kserve_http import decode_response, encode_request  # noqa: E402
from letterbox import to_letterbox, yolo_letterbox  # noqa: E402
from serverctl.proc import log_tail  # noqa: E402
from serverctl.triton import TritonServer, box_embed_installed, install_backends  # noqa: E402

COCO_DIR = os.environ.get("COCO_SUBSET_DIR", os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "coco_val2017_subset")))
BENCH_VENV = os.environ.get("BENCH_VENV", os.path.join(REPO_ROOT, ".cache", "bench-venv"))
WORK_DIR = os.path.join(REPO_ROOT, ".cache", "bench")
ENCODER = "clip_image"
# A folder with exported CLIP towers (benchmarks/run.sh passes it on); the stand-in without it.
CLIP_ONNX_DIR = os.environ.get("CLIP_ONNX_DIR")
# impl name in the results -> (model, outputs it returns)
IMPLS = {
    "rust": ("box_embed", ["box_embeddings", "box_valid"]),
    "python_bls": ("box_embed_bls", ["box_embeddings"]),
}
MIN_COSINE = 0.999  # below this the two implementations do not compute the same thing
K = 100  # rows of det_boxes, as the detector's end2end output pads them (num_dets says how many count)


# ---------------------------------------------------------------------------------------
# Inputs

def load_cases(min_annotations: int, max_boxes: int) -> list[dict]:
    """Photos with >= min_annotations boxes; their largest max_boxes boxes, in letterbox pixels."""
    with open(os.path.join(COCO_DIR, "instances_val2017_subset.json")) as f:
        data = json.load(f)
    by_image: dict = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cases = []
    for im in sorted(data["images"], key=lambda im: im["file_name"]):
        anns = by_image.get(im["id"], [])
        if len(anns) < min_annotations:
            continue
        # Largest first, as a detector's confident boxes tend to be; boxes under 2 px would
        # make validity hinge on rounding at box_embed's 1-px min_box_size.
        anns = sorted((a for a in anns if a["bbox"][2] >= 2 and a["bbox"][3] >= 2),
                      key=lambda a: -a["area"])[:max_boxes]
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        with Image.open(os.path.join(COCO_DIR, "images", im["file_name"])) as pic:
            image = np.ascontiguousarray(np.asarray(pic.convert("RGB"), dtype=np.uint8))
        lb = yolo_letterbox(image.shape[1], image.shape[0])
        boxes = np.zeros((K, 4), np.float32)
        boxes[:len(anns)] = to_letterbox(xyxy, lb)
        inputs = {
            "original": image[None],
            "det_boxes": boxes[None],
            "num_dets": np.array([[len(anns)]], np.int32),
            "letterbox": lb.reshape(1, 3),
        }
        cases.append({"name": im["file_name"], "n": len(anns), "inputs": inputs})
    if not cases:
        raise SystemExit(f"no photo in {COCO_DIR} has >= {min_annotations} annotations")
    return cases


# ---------------------------------------------------------------------------------------
# Server

def set_instance_kind(config_path: str, kind: str) -> None:
    with open(config_path) as f:
        text = f.read()
    text, n = re.subn(r"\bkind:\s*KIND_\w+", f"kind: {kind}", text)
    if n == 0:
        raise RuntimeError(f"{config_path}: no instance_group kind to set")
    with open(config_path, "w") as f:
        f.write(text)


def build_repository(repo: str, kind: str) -> None:
    """clip_image and box_embed from model_repository/, the baseline from benchmarks/models/."""
    ignore = shutil.ignore_patterns("__pycache__", "*.onnx")
    for name in (ENCODER, "box_embed"):
        shutil.copytree(os.path.join(REPO_ROOT, "model_repository", name), os.path.join(repo, name), ignore=ignore)
    shutil.copytree(os.path.join(BENCH_DIR, "models", "box_embed_bls"), os.path.join(repo, "box_embed_bls"),
                    ignore=ignore)
    os.makedirs(os.path.join(repo, "box_embed", "1"), exist_ok=True)  # Triton needs a version folder
    encoder = os.path.join(repo, ENCODER, "1", "model.onnx")
    if CLIP_ONNX_DIR:  # the exported MobileCLIP2-S2 image tower (export/mobileclip.py)
        os.symlink(os.path.abspath(os.path.join(CLIP_ONNX_DIR, "clip_image.onnx")), encoder)
    else:
        gen_encoders.generate(out=encoder)
    for name in (ENCODER, "box_embed", "box_embed_bls"):
        set_instance_kind(os.path.join(repo, name, "config.pbtxt"), kind)


def model_stats(url: str, model: str) -> dict:
    r = requests.get(f"{url}/v2/models/{model}/stats", timeout=10)
    r.raise_for_status()
    s = r.json()["model_stats"][0]["inference_stats"]
    return {k: (int(s[k]["count"]), int(s[k]["ns"])) for k in ("success", "queue", "compute_infer")}


# ---------------------------------------------------------------------------------------
# Client

class Client:
    """Bodies encoded once per (model, photo); each thread posts over its own keep-alive session."""

    def __init__(self, url: str, cases: list[dict]):
        self.url = url
        self.cases = cases
        self.bodies = {}
        for impl, (_model, outputs) in IMPLS.items():
            self.bodies[impl] = [encode_request(c["inputs"], outputs) for c in cases]
        self.local = threading.local()

    def infer(self, impl: str, i: int):
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        body, head_len = self.bodies[impl][i]
        r = session.post(f"{self.url}/v2/models/{IMPLS[impl][0]}/infer", data=body, timeout=300,
                         headers={"Inference-Header-Content-Length": str(head_len),
                                  "Content-Type": "application/octet-stream"})
        result = decode_response(r.status_code, r.content, r.headers.get("Inference-Header-Content-Length"))
        if not result.ok:
            raise RuntimeError(f"{impl} on {self.cases[i]['name']}: HTTP {result.status}: {result.error}")
        return result

    def run(self, impl: str, concurrency: int, count: int, start: int = 0) -> tuple[float, np.ndarray]:
        """count requests from `concurrency` threads, photos in turn from index start;
        returns (wall seconds, per-request latencies in ms)."""
        latencies = np.zeros(count)
        next_index = iter(range(count))
        lock = threading.Lock()
        errors = []

        def worker():
            while not errors:
                with lock:
                    j = next(next_index, None)
                if j is None:
                    return
                t0 = time.perf_counter()
                try:
                    self.infer(impl, (start + j) % len(self.cases))
                except Exception as e:  # stop every thread; reported after the join
                    errors.append(e)
                    return
                latencies[j] = (time.perf_counter() - t0) * 1e3

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return wall, latencies


def check_equal(client: Client) -> tuple[float, int]:
    """Min cosine between the two models' embeddings on every valid row of every photo."""
    worst, rows = 1.0, 0
    for i, case in enumerate(client.cases):
        rust = client.infer("rust", i).outputs
        bls = client.infer("python_bls", i).outputs["box_embeddings"][0]
        emb, valid = rust["box_embeddings"][0], rust["box_valid"][0]
        n = case["n"]
        if emb.shape != (n, bls.shape[1]) or not valid.all():
            raise RuntimeError(f"{case['name']}: rust returned {emb.shape} with {int(valid.sum())} valid rows, "
                               f"expected {n} valid rows of {bls.shape[1]} (every benchmark box is inside its photo)")
        if np.any(bls[n:]):
            raise RuntimeError(f"{case['name']}: baseline padding rows are not zero")
        a, b = emb.astype(np.float64), bls[:n].astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        worst = min(worst, float(cos.min()))
        rows += n
    return worst, rows


# ---------------------------------------------------------------------------------------
# Report

def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM; Triton instances {device.upper()}"


def markdown(rows: list[dict], min_cosine: float) -> str:
    lines = ["| impl | concurrency | images/s | p50 ms | p99 ms | rust speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rust = {r["concurrency"]: r["images_per_s"] for r in rows if r["impl"] == "rust"}
    for r in rows:
        ratio = rust[r["concurrency"]] / r["images_per_s"] if r["impl"] != "rust" else None
        lines.append(f"| {r['impl']} | {r['concurrency']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    lines.append(f"\nmin cosine between the two implementations (valid rows): {min_cosine:.8f}")
    return "\n".join(lines)


def breakdown(before: dict, after: dict, requests_: int) -> str:
    """Server time per request at concurrency 1 (no batching, so per-request stats are exact)."""
    def ms(model, key):
        return (after[model][key][1] - before[model][key][1]) / requests_ / 1e6
    impl_model = next(m for m in after if m != ENCODER)
    compute, encoder = ms(impl_model, "compute_infer"), ms(ENCODER, "success")
    return (f"{impl_model}: server compute {compute:.1f} ms/image, of which encoder {encoder:.1f} ms "
            f"(clip_image request incl. queue), own work {compute - encoder:.1f} ms")


def profile(server, client: Client, concurrency: int, requests_: int, out: str) -> str:
    """Samples the server and its Python stubs (the encoder) with `perf` while the Rust
    model serves `requests_` requests; writes the flat profile to `out`, returns its head."""
    stubs = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    data = os.path.join(WORK_DIR, "perf.data")
    perf = subprocess.Popen(["perf", "record", "-F", "499", "-o", data, "-p", ",".join([str(server.pid), *stubs])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # perf attaches before the load starts
    client.run("rust", concurrency, requests_)
    perf.send_signal(2)
    if perf.wait(timeout=60) not in (0, -2):
        raise RuntimeError(f"perf record failed: {perf.stderr.read().decode()[-2000:]}")

    def flat(sort: str) -> list[str]:
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                                 "--percent-limit", "0.5", "--stdio"], capture_output=True, text=True, check=True)
        # perf pads each line to the terminal width; keep the columns, drop the padding
        return [re.sub(r"(\s+-)*\s*$", "", line) for line in report.stdout.splitlines()
                if re.match(r"^\s+\d+\.\d+%", line)]

    by_library, by_symbol = flat("comm,dso"), flat("comm,dso,symbol")
    with open(out, "w") as f:
        f.write(f"# perf record -F 499, tritonserver + its Python stubs (the encoder), rust impl, "
                f"concurrency {concurrency}, {requests_} requests; self time\n")
        f.write("\n## per process and library\n" + "\n".join(by_library) + "\n")
        f.write("\n## per symbol\n" + "\n".join(by_symbol) + "\n")
    return "\n".join(by_library[:8])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="instance kind of every model in the generated configs: KIND_CPU or KIND_GPU")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=400, help="measured requests per impl and level")
    p.add_argument("--min-annotations", type=int, default=8)
    p.add_argument("--max-boxes", type=int, default=10)
    p.add_argument("--out", help="default benchmarks/results/box_embed_<device>.json")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, sample the server with perf while the Rust model serves at concurrency 8; "
                        "writes benchmarks/results/box_embed_profile_<device>.txt")
    a = p.parse_args(argv)
    levels = [int(c) for c in a.concurrency.split(",")]
    out = a.out or os.path.join(BENCH_DIR, "results", f"box_embed_{a.device}.json")
    started = time.monotonic()

    cases = load_cases(a.min_annotations, a.max_boxes)
    boxes = sum(c["n"] for c in cases)
    print(f"{len(cases)} photos, {boxes} boxes ({boxes / len(cases):.1f} per photo)")

    for note in install_backends(venv=BENCH_VENV):
        print(note)
    if not box_embed_installed():
        raise SystemExit("box_embed backend not built: run `cargo build --release -p box-embed-backend`")
    os.makedirs(WORK_DIR, exist_ok=True)
    repo = tempfile.mkdtemp(prefix="model_repository-", dir=WORK_DIR)
    build_repository(repo, f"KIND_{a.device.upper()}")
    server = TritonServer(repo, [ENCODER, "box_embed", "box_embed_bls"], venv=BENCH_VENV,
                                    log_path=os.path.join(WORK_DIR, "tritonserver.log"))
    server.start()
    try:
        server.wait_ready(timeout=300)
        print(f"tritonserver pid {server.pid} on {server.http_url}, log {server.log_path}")
        client = Client(server.http_url, cases)

        min_cosine, rows_checked = check_equal(client)  # doubles as the first warm-up
        print(f"equal embeddings: min cosine {min_cosine:.8f} (1 - cos = {1 - min_cosine:.1e}) "
              f"over {rows_checked} rows")

        rows, notes = [], []
        for c in levels:
            for impl, (model, _) in IMPLS.items():
                client.run(impl, c, max(2 * c, 16))  # warm-up at this level (threads, sessions, batcher)
                stats = [ENCODER, model]
                before = {m: model_stats(server.http_url, m) for m in stats}
                wall, lat = client.run(impl, c, a.requests, start=c)
                after = {m: model_stats(server.http_url, m) for m in stats}
                row = {"impl": impl, "concurrency": c, "images_per_s": round(a.requests / wall, 2),
                       "p50_ms": round(float(np.percentile(lat, 50)), 2),
                       "p99_ms": round(float(np.percentile(lat, 99)), 2)}
                rows.append(row)
                print(f"  {impl:>10} c={c:<3} {row['images_per_s']:7.1f} img/s  p50 {row['p50_ms']:7.1f} ms  "
                      f"p99 {row['p99_ms']:7.1f} ms", flush=True)
                if c == 1:
                    notes.append(breakdown(before, after, a.requests))
        if a.profile:
            profile_out = os.path.join(BENCH_DIR, "results", f"box_embed_profile_{a.device}.txt")
            top = profile(server, client, 8, a.requests, profile_out)
            notes.append(f"perf profile ({profile_out}), top entries:\n" + top)
        if not server.alive() or server.crash_lines():
            raise RuntimeError(f"tritonserver died or logged a crash; log {server.log_path}:\n"
                               f"{log_tail(server.log_path)}")
    finally:
        print(f"tritonserver: {server.stop()}")
        shutil.rmtree(repo, ignore_errors=True)

    # The other benchmarks keep their sections (ingest, search) in the same file.
    result = {}
    if os.path.exists(out):
        with open(out) as f:
            result = json.load(f)
    result.update({"machine": machine(a.device), "rows": rows, "min_cosine": round(min_cosine, 8)})
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print()
    print(markdown(rows, min_cosine))
    print()
    print("\n".join(notes))
    print(f"\nwrote {out} in {time.monotonic() - started:.0f} s")
    if min_cosine < MIN_COSINE:
        print(f"FAIL: min cosine {min_cosine:.6f} < {MIN_COSINE}: the implementations disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
