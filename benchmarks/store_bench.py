#!/usr/bin/env python3
"""The `store` part of benchmarks/run.sh: the embedded store at scale, at 100,000 images.

Runs the store_scale example (visual-store/examples/store_scale.rs: bulk insert, search
latency and recall@10 per kind and filter, memory, reopen after drop and after kill -9,
search while writing) and then the gateway's text search over the same store
(store_scale_http.py), exactly as benchmarks/store_scale.sh does for 1,000,000 images.
The store folder is removed afterwards (about 3 GB at 100,000 images) unless --keep.

Usage: benchmarks/store_bench.py [--images 100000] [--queries 100] [--keep] [--out FILE]
                                 [--data-dir DIR] [--writer-seconds S] [--backend-dir DIR] [--work-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import store_scale_http

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
STORE_SCALE_BIN = os.path.join(REPO_ROOT, "target", "release", "examples", "store_scale")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=100, help="queries per kind and filter")
    p.add_argument("--writer-seconds", type=float, default=20, help="how long the killed writer writes")
    p.add_argument("--data-dir", default=None, help="default .cache/bench/store-scale-<images>")
    p.add_argument("--out", default=None, help="default benchmarks/results/store_scale_<images>.json")
    p.add_argument("--keep", action="store_true", help="keep the store folder")
    p.add_argument("--backend-dir", default=None, help="passed to store_scale_http.py")
    p.add_argument("--work-dir", default=None, help="passed to store_scale_http.py")
    a = p.parse_args(argv)
    data_dir = a.data_dir or os.path.join(REPO_ROOT, ".cache", "bench", f"store-scale-{a.images}")
    out = a.out or os.path.join(BENCH_DIR, "results", f"store_scale_{a.images}.json")
    if not os.path.exists(STORE_SCALE_BIN):
        raise SystemExit(f"{STORE_SCALE_BIN} missing: run `cargo build --release -p visual-store --example "
                         "store_scale`")
    try:
        subprocess.run([STORE_SCALE_BIN, "--images", str(a.images), "--queries", str(a.queries),
                        "--writer-seconds", str(a.writer_seconds), "--data-dir", data_dir, "--out", out],
                       check=True, cwd=REPO_ROOT)
        http_args = ["--data-dir", data_dir, "--out", out]
        for flag, value in (("--backend-dir", a.backend_dir), ("--work-dir", a.work_dir)):
            if value:
                http_args += [flag, value]
        store_scale_http.main(http_args)
    finally:
        if not a.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
