#!/usr/bin/env python3
"""Benchmark the whole ingest pipeline and the gateway's text search on this machine.

One tritonserver (scripts/serverctl, CPU instances as configured in model_repository/)
serves the `visual_ingest` ensemble and `clip_text`; the real COCO photos go through it:

- ensemble: single-photo latency (concurrency 1) and throughput at concurrency 8 (images/s,
  p50, p99), straight to Triton over HTTP;
- gateway: the built gateway binary with a fresh embedded store ingests every photo through
  `gateway ingest` (images/s end to end: upload, ensemble, durable store commit), then
  answers text queries taken from the COCO captions (p50/p99 over HTTP);
- larger stores: `fill_store` (visual-store example) grows a second store to each of
  --store-sizes images from noisy copies of the ingested records, and a fresh gateway over
  it answers the same queries;
- guarded: the same ingest and search once more, in the same run, through a gateway with
  read and write keys (every request authenticated) and its default limits, so the cost of
  the exposed configuration shows side by side with the open one.

Every text query string is distinct, so the gateway's query-embedding cache never answers
the first pass ("uncached": tokenizer + clip_text + store search + records); a second pass
of the same strings is all cache hits ("cached": store search + records + HTTP).
The "ingest" and "search" sections of benchmarks/results/box_embed_cpu.json are replaced.
Runs unchanged on the GPU machine (the instance kinds come from the model configs).

Usage: benchmarks/pipeline_bench.py [--requests N] [--queries N] [--store-sizes N,N] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

from kserve_http import infer  # noqa: E402
from serverctl.proc import free_port  # noqa: E402
from serverctl.triton import TritonServer, install_backends  # noqa: E402

COCO_DIR = os.environ.get("COCO_SUBSET_DIR", os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "coco_val2017_subset")))
TOKENIZER_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "models", "clip_tokenizer"))
MODELS = ["preprocess", "yolo", "clip_image", "box_embed", "visual_ingest", "clip_text"]
OUTPUTS = ["num_dets", "boxes", "scores", "classes", "embedding", "box_embeddings", "box_valid"]
GATEWAY_BIN = os.environ.get("GATEWAY_BIN", os.path.join(REPO_ROOT, "target", "release", "gateway"))
FILL_STORE_BIN = os.path.join(REPO_ROOT, "target", "release", "examples", "fill_store")
WORK_DIR = os.path.join(REPO_ROOT, ".cache", "bench")


def load(fn, count: int, concurrency: int) -> tuple[float, np.ndarray]:
    """Calls fn(i) for i in range(count) from `concurrency` threads; (wall s, latencies ms)."""
    latencies = np.zeros(count)
    indices = iter(range(count))
    lock = threading.Lock()
    errors: list[Exception] = []

    def worker():
        while not errors:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            start = time.perf_counter()
            try:
                fn(i)
            except Exception as e:  # reported after the join
                errors.append(e)
                return
            latencies[i] = (time.perf_counter() - start) * 1e3

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start, latencies


def summary(wall: float, latencies: np.ndarray) -> dict:
    return {"images_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2)}


def compute_ms(url: str, model: str) -> tuple[int, int]:
    """(successful requests, compute_infer ns) from Triton's statistics of `model`."""
    with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=10) as r:
        stats = json.load(r)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"]), int(stats["compute_infer"]["ns"])


def bench_ensemble(url: str, photos: list[bytes], requests_: int) -> dict:
    def one(i):
        r = infer(url, "visual_ingest", {"image": np.frombuffer(photos[i % len(photos)], np.uint8)[None]}, OUTPUTS)
        if not r.ok:
            raise RuntimeError(f"visual_ingest failed: HTTP {r.status}: {r.error}")

    load(one, 16, 4)  # warm-up: sessions, batcher, thread pools
    result = {}
    steps = [m for m in MODELS if m not in ("visual_ingest", "clip_text")]
    for concurrency in (1, 8):
        before = {m: compute_ms(url, m) for m in steps}
        row = summary(*load(one, requests_, concurrency))
        after = {m: compute_ms(url, m) for m in steps}
        # Server compute per photo of each step (box_embed's includes its in-process encoder calls).
        row["compute_ms_per_image"] = {m: round((after[m][1] - before[m][1]) / 1e6 / requests_, 2) for m in steps}
        result[f"concurrency_{concurrency}"] = row
        print(f"  visual_ingest c={concurrency}: {row['images_per_s']:.1f} img/s  p50 {row['p50_ms']:.1f} ms  "
              f"p99 {row['p99_ms']:.1f} ms; compute ms/photo {row['compute_ms_per_image']}", flush=True)
    return result


# Keys of the guarded gateway; requests carry them when `API_KEY` is set (bench_guarded).
READ_KEY = "bench-read-" + "r" * 24
WRITE_KEY = "bench-write-" + "w" * 24
API_KEY: str | None = None


def get(url: str, timeout: float):
    headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited during startup (code {proc.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gateway not healthy after {timeout}s")


@contextlib.contextmanager
def gateway(server: TritonServer, data_dir: str, log_name: str, extra_args: tuple = ()):
    """A `gateway serve` over `data_dir` (embedded store in `<data_dir>/store`); yields
    (url, seconds until healthy, which includes opening the store)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(os.path.join(WORK_DIR, log_name), "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen([GATEWAY_BIN, "serve", "--listen", f"127.0.0.1:{port}",
                                 "--triton", f"http://{server.grpc_address}", "--data-dir", data_dir,
                                 "--tokenizer-dir", TOKENIZER_DIR, "--store", "embedded", *extra_args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
        try:
            wait_healthy(url, proc)
            yield url, time.perf_counter() - started
        finally:
            # SIGTERM: the gateway saves its graphs, so the next open of the store loads them.
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def captions(count: int) -> list[str]:
    with open(os.path.join(COCO_DIR, "captions_val2017_subset.json")) as f:
        texts = sorted({a["caption"].strip() for a in json.load(f)["annotations"]})
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} distinct captions; ask for fewer queries")
    return texts[:count]


def bench_text_search(url: str, texts: list[str], warm_up: list[str], stored: int) -> dict:
    """GET /search/text at concurrency 1: `texts` once uncached, then again from the cache."""
    def one(text: str):
        query = urllib.parse.urlencode({"q": text, "k": 10})
        with get(f"{url}/search/text?{query}", timeout=30) as r:
            hits = json.load(r)["results"]
            if len(hits) != min(10, stored):
                raise RuntimeError(f"{len(hits)} results for {text!r} over {stored} images")

    load(lambda i: one(warm_up[i]), len(warm_up), 1)  # connections, page cache; other strings
    row = {"stored_images": stored, "concurrency": 1, "queries": len(texts)}
    for cache in ("uncached", "cached"):
        wall, latencies = load(lambda i: one(texts[i]), len(texts), 1)
        row[cache] = {"p50_ms": round(float(np.percentile(latencies, 50)), 2),
                      "p99_ms": round(float(np.percentile(latencies, 99)), 2),
                      "queries_per_s": round(len(texts) / wall, 1)}
    print(f"  gateway text search over {stored:,} images: "
          + "; ".join(f"{c} p50 {row[c]['p50_ms']:.1f} ms p99 {row[c]['p99_ms']:.1f} ms "
                      f"({row[c]['queries_per_s']:.0f} q/s)"
                      for c in ("uncached", "cached")), flush=True)
    return row


def ingest_and_search(url: str, photo_dir: str, photo_count: int, texts: list[str], warm_up: list[str],
                      key_args: tuple = ()) -> tuple[dict, dict]:
    """`gateway ingest` of every photo at concurrency 8, then text search over them."""
    start = time.perf_counter()
    subprocess.run([GATEWAY_BIN, "ingest", photo_dir, "--url", url, "--concurrency", "8", *key_args],
                   check=True, cwd=REPO_ROOT, capture_output=True)
    ingest_s = time.perf_counter() - start
    ingest = {"photos": photo_count, "concurrency": 8, "images_per_s": round(photo_count / ingest_s, 2)}
    print(f"  gateway ingest: {photo_count} photos in {ingest_s:.1f} s = {ingest['images_per_s']:.1f} img/s",
          flush=True)
    return ingest, bench_text_search(url, texts, warm_up, photo_count)


def bench_guarded(server: TritonServer, photo_dir: str, photo_count: int, texts: list[str],
                  warm_up: list[str]) -> dict:
    """Ingest and search through a gateway with keys and its default limits."""
    global API_KEY
    data_dir = tempfile.mkdtemp(prefix="gateway-guarded-", dir=WORK_DIR)
    keys = ("--read-keys", READ_KEY, "--write-keys", WRITE_KEY)
    try:
        with gateway(server, data_dir, "gateway-guarded.log", keys) as (url, _):
            print("  guarded gateway (keys on, default limits):", flush=True)
            API_KEY = READ_KEY
            ingest, search = ingest_and_search(url, photo_dir, photo_count, texts, warm_up,
                                               ("--api-key", WRITE_KEY))
        return {"ingest": ingest, "search": search}
    finally:
        API_KEY = None
        shutil.rmtree(data_dir, ignore_errors=True)


def bench_gateway(server: TritonServer, photo_dir: str, photo_count: int, queries: int,
                  store_sizes: list[int]) -> tuple[dict, list[dict], dict]:
    """Ingest through the gateway, then text search over the ingested store and over stores
    filled to each of `store_sizes` from its records; (ingest row, search rows)."""
    texts = captions(queries + 20)
    texts, warm_up = texts[:queries], texts[queries:]
    ingested_dir = tempfile.mkdtemp(prefix="gateway-", dir=WORK_DIR)
    filled_dir = tempfile.mkdtemp(prefix="gateway-filled-", dir=WORK_DIR)
    try:
        with gateway(server, ingested_dir, "gateway.log") as (url, _):
            print("  open gateway (no keys):", flush=True)
            ingest, searched = ingest_and_search(url, photo_dir, photo_count, texts, warm_up)
            search = [{"records": "ingested", **searched}]
        guarded = bench_guarded(server, photo_dir, photo_count, texts, warm_up)

        stored = 0
        for size in store_sizes:
            start = time.perf_counter()
            subprocess.run([FILL_STORE_BIN, os.path.join(ingested_dir, "store"), os.path.join(filled_dir, "store"),
                            str(size)], check=True, cwd=REPO_ROOT)
            fill_s = time.perf_counter() - start
            fill = {"images": size - stored, "seconds": round(fill_s, 1),
                    "images_per_s": round((size - stored) / fill_s, 1)}
            stored = size
            with gateway(server, filled_dir, f"gateway-{size}.log") as (url, startup_s):
                print(f"  gateway over {size:,} images healthy after {startup_s:.1f} s", flush=True)
                row = bench_text_search(url, texts, warm_up, size)
            search.append({"records": f"filled from the {photo_count} ingested", "fill": fill,
                           "gateway_startup_s": round(startup_s, 1), **row})
        return ingest, search, guarded
    finally:
        shutil.rmtree(ingested_dir, ignore_errors=True)
        shutil.rmtree(filled_dir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="ensemble requests per concurrency level")
    p.add_argument("--queries", type=int, default=300, help="distinct text queries against each gateway")
    p.add_argument("--store-sizes", default="10000,100000",
                   help="comma-separated sizes of the filled stores to search too; empty for none")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results", "box_embed_cpu.json"))
    a = p.parse_args(argv)
    store_sizes = sorted(int(n) for n in a.store_sizes.split(",") if n)
    for path, build in ((GATEWAY_BIN, "--workspace"), (FILL_STORE_BIN, "-p visual-store --example fill_store")):
        if not os.path.exists(path):
            raise SystemExit(f"{path} missing: run `cargo build --release {build}`")
    photo_dir = os.path.join(COCO_DIR, "images")
    paths = sorted(glob.glob(os.path.join(photo_dir, "*.jpg")))
    photos = [open(path, "rb").read() for path in paths]
    print(f"{len(photos)} photos from {photo_dir}")

    for note in install_backends():
        print(note)
    os.makedirs(WORK_DIR, exist_ok=True)
    server = TritonServer(os.path.join(REPO_ROOT, "model_repository"), MODELS,
                                    log_path=os.path.join(WORK_DIR, "tritonserver-pipeline.log"))
    server.start()
    try:
        server.wait_ready(timeout=300)
        ensemble = bench_ensemble(server.http_url, photos, a.requests)
        ingest, search, guarded = bench_gateway(server, photo_dir, len(photos), a.queries, store_sizes)
        if not server.alive() or server.crash_lines():
            raise RuntimeError(f"tritonserver died or logged a crash; log {server.log_path}")
    finally:
        print(f"tritonserver: {server.stop()}")

    result = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            result = json.load(f)
    result["ingest"] = {"visual_ingest": ensemble, "gateway": ingest}
    result["search"] = {"gateway_text": search}
    result["guarded_gateway"] = guarded
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote ingest/search sections of {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
