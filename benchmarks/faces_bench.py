#!/usr/bin/env python3
"""Benchmark the gateway's face endpoints on this machine.

One tritonserver (scripts/serverctl, CPU instances as configured in model_repository/)
serves the `face_embed` ensemble and its steps; the release gateway (GATEWAY_BIN, default
target/release/gateway) runs against it twice: once with the native rerank scorer and once
with `--rerank-library target/release/librerank_plugin.so` (the library beside the binary).

- `POST /faces/embeddings`: the 29 photos of ../shared/data/faces/coco_faces_scrfd500m.json,
  one photo per multipart request, `--rounds` passes over them at each concurrency level
  (photos/s, faces/s, p50/p99 per request);
- `POST /faces/rerank`: 100, 1,000 and 10,000 candidates of 128-d random unit vectors with
  threshold 0 (every candidate scored, sorted and returned), at concurrency 1, native scorer
  and plugin: client latency p50/p99 (JSON encoding and parsing included) and the gateway's
  own `diagnostics.latency_ms` p50/p99 (checks + scoring + sort).

Only the face models are loaded, so the gateway's /health stays 503 (its ingest models are
absent); the script waits for it to answer and for the face models to be ready instead.

Usage: benchmarks/faces_bench.py [--rounds N] [--concurrency 1,4] [--rerank-requests N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path[:0] = [BENCH_DIR, os.path.join(REPO_ROOT, "scripts")]

from pipeline_bench import COCO_DIR, GATEWAY_BIN, TOKENIZER_DIR, WORK_DIR, load  # noqa: E402
from serverctl.proc import free_port  # noqa: E402
from serverctl.triton import TritonServer, install_backends  # noqa: E402

FACE_LIST = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "faces", "coco_faces_scrfd500m.json"))
PLUGIN_SO = os.path.join(os.path.dirname(GATEWAY_BIN), "librerank_plugin.so")
MODELS = ["preprocess", "face_detect", "face_align", "face_encoder", "face_embed"]
FACE_HEALTH_MODELS = ["face_embed", "face_detect", "face_align", "face_encoder"]  # those /health lists
RERANK_SIZES = (100, 1_000, 10_000)
RERANK_DIM = 128


def percentiles(values) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


class GatewayProcess:
    """The gateway on a free loopback port with a temporary data dir; stopped by pid."""

    def __init__(self, triton_grpc: str, name: str, extra_args: tuple = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix=f"gateway-{name}-", dir=WORK_DIR)
        self.log_path = os.path.join(WORK_DIR, f"gateway-faces-{name}.log")
        self.args = [GATEWAY_BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--triton", f"http://{triton_grpc}",
                     "--data-dir", self.data_dir, "--tokenizer-dir", TOKENIZER_DIR, "--store", "embedded", *extra_args]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "GatewayProcess":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited during startup (code {self.proc.returncode}); log {self.log_path}")
            try:
                health = requests.get(f"{self.url}/health", timeout=5).json()
                ready = {m["name"]: m["ready"] for m in health["triton"]["models"]}
                if all(ready.get(m) for m in FACE_HEALTH_MODELS):
                    return self
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gateway's face models not ready after 120 s; log {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def bench_embeddings(url: str, photos: list[tuple[str, bytes]], rounds: int, levels: list[int]) -> list[dict]:
    faces_found = np.zeros(len(photos) * rounds, dtype=np.int64)

    def one(i):
        name, data = photos[i % len(photos)]
        r = requests.post(f"{url}/faces/embeddings", files=[("image", (name, data))], timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"/faces/embeddings: HTTP {r.status_code}: {r.text[:200]}")
        faces_found[i] = len(r.json()["results"][0]["faces"])

    load(one, len(photos), 2)  # warm-up: onnxruntime sessions, batchers, connection pools
    rows = []
    count = len(photos) * rounds
    for concurrency in levels:
        wall, latencies = load(one, count, concurrency)
        p50, p99 = percentiles(latencies)
        row = {"concurrency": concurrency, "photos": count, "faces": int(faces_found.sum()),
               "photos_per_s": count / wall, "faces_per_s": faces_found.sum() / wall, "p50_ms": p50, "p99_ms": p99}
        rows.append(row)
        print(f"  /faces/embeddings c={concurrency}: {row['photos_per_s']:.1f} photos/s, "
              f"{row['faces_per_s']:.1f} faces/s, "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({count} photos, {row['faces']} faces)", flush=True)
    return rows


def rerank_body(count: int, rng: np.random.Generator) -> bytes:
    """JSON body with `count` random unit candidates; numbers at f32 precision keep 10,000 x 128
    under the gateway's 32 MiB request limit."""
    vectors = rng.standard_normal((count + 1, RERANK_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def array(v) -> str:
        return "[" + ",".join(f"{x:.7g}" for x in v) + "]"

    candidates = ",".join(f'{{"id":"c{i}","embedding":{array(v)}}}' for i, v in enumerate(vectors[1:]))
    return f'{{"query":{array(vectors[0])},"candidates":[{candidates}],"threshold":0}}'.encode()


def bench_rerank(url: str, scorer: str, bodies: dict[int, bytes], requests_: int) -> list[dict]:
    rows = []
    for count, body in bodies.items():
        n = max(requests_ * 100 // count, 20) if count > 1_000 else requests_
        server_ms = np.zeros(n)

        def one(i, body=body, count=count, server_ms=server_ms):  # bound now: the loop rebinds them
            r = requests.post(f"{url}/faces/rerank", data=body, headers={"content-type": "application/json"},
                              timeout=60)
            if r.status_code != 200:
                raise RuntimeError(f"/faces/rerank: HTTP {r.status_code}: {r.text[:200]}")
            answer = r.json()
            # diagnostics name the scorer as "native" or "plugin:<path>"
            if answer["diagnostics"]["scorer"].split(":")[0] != scorer or answer["diagnostics"]["returned"] != count:
                raise RuntimeError(f"unexpected diagnostics {answer['diagnostics']}")
            server_ms[i] = answer["diagnostics"]["latency_ms"]

        load(one, min(n, 5), 1)  # warm-up
        _, latencies = load(one, n, 1)
        client = percentiles(latencies)
        server = percentiles(server_ms)
        rows.append({"scorer": scorer, "candidates": count, "requests": n, "body_mb": len(body) / 1e6,
                     "client_p50_ms": client[0], "client_p99_ms": client[1],
                     "server_p50_ms": server[0], "server_p99_ms": server[1]})
        print(f"  /faces/rerank {scorer} {count} candidates: client p50 {client[0]:.2f} ms p99 {client[1]:.2f} ms; "
              f"gateway latency_ms p50 {server[0]:.3f} p99 {server[1]:.3f} "
              f"({n} requests, body {len(body) / 1e6:.1f} MB)",
              flush=True)
    return rows


def print_tables(embeddings: list[dict], rerank: list[dict]) -> None:
    print("\n| `/faces/embeddings` concurrency | photos/s | faces/s | p50 ms | p99 ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in embeddings:
        print(f"| {r['concurrency']} | {r['photos_per_s']:.1f} | {r['faces_per_s']:.1f} "
              f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    print("\n| `/faces/rerank` scorer | candidates | client p50 ms | client p99 ms | gateway p50 ms | gateway p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rerank:
        print(f"| {r['scorer']} | {r['candidates']:,} | {r['client_p50_ms']:.2f} | {r['client_p99_ms']:.2f} | "
              f"{r['server_p50_ms']:.3f} | {r['server_p99_ms']:.3f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="passes over the 29 photos per concurrency level")
    p.add_argument("--concurrency", default="1,4", help="client threads for /faces/embeddings, comma-separated")
    p.add_argument("--rerank-requests", type=int, default=200,
                   help="rerank requests for 100 and 1,000 candidates (10,000: a tenth, at least 20)")
    a = p.parse_args(argv)
    for path, hint in ((GATEWAY_BIN, "cargo build --release -p gateway"),
                       (PLUGIN_SO, "cargo build --release -p rerank-plugin")):
        if not os.path.exists(path):
            raise SystemExit(f"{path} missing: run `{hint}`")
    with open(FACE_LIST) as f:
        names = sorted(json.load(f))
    photos = []
    for name in names:
        with open(os.path.join(COCO_DIR, "images", name), "rb") as f:
            photos.append((name, f.read()))
    print(f"{len(photos)} face photos from {FACE_LIST}")
    rng = np.random.default_rng(7)
    bodies = {count: rerank_body(count, rng) for count in RERANK_SIZES}

    for note in install_backends():
        print(note)
    os.makedirs(WORK_DIR, exist_ok=True)
    server = TritonServer(os.path.join(REPO_ROOT, "model_repository"), MODELS,
                                    log_path=os.path.join(WORK_DIR, "tritonserver-faces.log"))
    server.start()
    try:
        server.wait_ready(timeout=300)
        with GatewayProcess(server.grpc_address, "native") as native:
            embeddings = bench_embeddings(native.url, photos, a.rounds, [int(c) for c in a.concurrency.split(",")])
            rerank = bench_rerank(native.url, "native", bodies, a.rerank_requests)
        with GatewayProcess(server.grpc_address, "plugin", ("--rerank-library", PLUGIN_SO)) as plugin:
            rerank += bench_rerank(plugin.url, "plugin", bodies, a.rerank_requests)
        if not server.alive() or server.crash_lines():
            raise RuntimeError(f"tritonserver died or logged a crash; log {server.log_path}")
    finally:
        print(f"tritonserver: {server.stop()}")
    print_tables(embeddings, rerank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
