#!/usr/bin/env python3
"""Text search over HTTP through the real gateway at a store built by the store_scale example.

The `store_scale` example (visual-store/examples/store_scale.rs) leaves its store at
`<data-dir>/store`, the path `gateway serve --data-dir <data-dir>` opens. This script starts
one tritonserver (the pipeline benchmark's models, so that the gateway's /health is 200), a
release gateway over that data dir, and measures GET /search/text at concurrency 1 with the
pipeline benchmark's own helpers (distinct COCO captions: uncached, then the same strings
again: cached). The row is merged into the example's JSON under "gateway_text_search".

Usage: benchmarks/store_scale_http.py --data-dir DIR [--queries 300] [--out FILE]
                                      [--backend-dir DIR] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import pipeline_bench as pb  # sets up the scripts/ import path too
from serverctl.triton import DEFAULT_BACKEND_DIR, TritonServer, install_backends


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the example's --data-dir (the store is <data-dir>/store)")
    p.add_argument("--queries", type=int, default=300, help="distinct text queries")
    p.add_argument("--out", default=os.path.join(pb.BENCH_DIR, "results", "store_scale.json"),
                   help="the example's result file, merged into")
    # Both default to the shared .cache; a second checkout can keep its own.
    p.add_argument("--backend-dir", default=DEFAULT_BACKEND_DIR, help="where Triton's backends are installed")
    p.add_argument("--work-dir", default=pb.WORK_DIR, help="logs of tritonserver and the gateway")
    a = p.parse_args(argv)

    if not os.path.exists(pb.GATEWAY_BIN):
        raise SystemExit(f"{pb.GATEWAY_BIN} missing: run `cargo build --release --workspace`")
    with open(a.out) as f:
        result = json.load(f)
    if not os.path.isdir(os.path.join(a.data_dir, "store")):
        raise SystemExit(f"no store at {a.data_dir}/store: run the store_scale example with --data-dir {a.data_dir}")
    # Every image the store holds: the N measured plus those the example's writers added.
    stored = result["reopen"]["after_kill_9"]["images_after"]

    texts = pb.captions(a.queries + 20)
    texts, warm_up = texts[:a.queries], texts[a.queries:]
    pb.WORK_DIR = a.work_dir  # pb.gateway() writes its log there
    os.makedirs(a.work_dir, exist_ok=True)
    for note in install_backends(a.backend_dir):
        print(note)
    server = TritonServer(os.path.join(pb.REPO_ROOT, "model_repository"), pb.MODELS, backend_dir=a.backend_dir,
                          log_path=os.path.join(a.work_dir, "tritonserver-store-scale.log"))
    server.start()
    try:
        server.wait_ready(timeout=300)
        with pb.gateway(server, a.data_dir, "gateway-store-scale.log") as (url, startup_s):
            print(f"  gateway over {stored:,} images healthy after {startup_s:.1f} s", flush=True)
            row = pb.bench_text_search(url, texts, warm_up, stored)
        if not server.alive() or server.crash_lines():
            raise RuntimeError(f"tritonserver died or logged a crash; log {server.log_path}")
    finally:
        print(f"tritonserver: {server.stop()}")

    # Read again: the file is only ever written whole, but keep whatever it holds now.
    with open(a.out) as f:
        result = json.load(f)
    result["gateway_text_search"] = {"gateway_startup_s": round(startup_s, 1), **row}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"merged gateway_text_search into {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
