#!/usr/bin/env python3
"""The crop-and-embed stage (box_embed) against the image encoder alone, on the same crops.

One tritonserver serves clip_image (the ONNX given, e.g. the exported MobileCLIP2-S2 image
tower) and box_embed (crops cut from each photo, sent in-process to clip_image). Per photo:
  stage    box_embed with the photo and its boxes (letterbox pixels, as the detector gives);
  encoder  clip_image with that photo's crops, cut beforehand by tests/crop_reference.py (the
           same crops box_embed makes), so only the encoder's cost is left.
Both are measured in interleaved rounds at each concurrency (stage, encoder, encoder, stage,
...), so a busy machine slows both alike; photos/s = requests / wall time over all rounds.
The stage's overhead is 1 - stage/encoder. Writes benchmarks/results/<name>.json.

    benchmarks/encoder_stage.sh [--concurrency 8,32] [--requests 16] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import requests

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
sys.path.insert(0, BENCH_DIR)

import box_embed_bench as bench  # noqa: E402
import model_config as mc  # noqa: E402
from crop_reference import CropParams, crop, map_and_check  # noqa: E402
from kserve_http import encode_request  # noqa: E402
from serverctl.proc import log_tail  # noqa: E402
from serverctl.triton import TritonServer, box_embed_installed, install_backends  # noqa: E402

DEFAULT_ENCODER_DIR = os.path.join(REPO_ROOT, ".cache", "export", "mobileclip2_s2_random")
WORK_DIR = os.path.join(REPO_ROOT, ".cache", "bench")
MODELS = ("clip_image", "box_embed")


def build_repository(repo: str, onnx_path: str, box_embed_instances: int) -> None:
    for name in MODELS:
        shutil.copytree(os.path.join(REPO_ROOT, "model_repository", name), os.path.join(repo, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    os.symlink(os.path.abspath(onnx_path), os.path.join(repo, "clip_image", "1", "model.onnx"))
    # The real encoder on a few CPU cores serves well under one photo a second, so 32 photos
    # in flight queue longer than the configs' 60 s (a fast UNAVAILABLE is right in service,
    # not in a throughput measurement): the queues wait up to 10 minutes here.
    for name in MODELS:
        path = os.path.join(repo, name, "config.pbtxt")
        with open(path) as f:
            text = f.read()
        text, n = re.subn(r"default_timeout_microseconds:\s*\d+", "default_timeout_microseconds: 600000000", text)
        if n != 1:
            raise RuntimeError(f"{path}: no queue timeout to lift")
        if name == "box_embed":
            text, n = re.subn(r"count:\s*\d+", f"count: {box_embed_instances}", text)
            if n != 1:
                raise RuntimeError(f"{path}: no instance count to set")
        with open(path, "w") as f:
            f.write(text)


def crop_params() -> CropParams:
    with open(os.path.join(REPO_ROOT, "model_repository", "box_embed", "config.pbtxt")) as f:
        p = mc.parameters(mc.parse(f.read()))
    return CropParams(policy=p["crop_policy"], crop_size=int(p["crop_size"]), sampling_ratio=int(p["sampling_ratio"]),
                      context_scale=float(p["context_scale"]), min_box_size=float(p["min_box_size"]))


class Client(bench.Client):
    """The benchmark client with two request kinds: the stage and the encoder on its crops."""

    def __init__(self, url: str, cases: list[dict]):
        params = crop_params()
        for c in cases:
            image = c["inputs"]["original"][0]
            h, w = image.shape[:2]
            boxes = [map_and_check(b, c["inputs"]["letterbox"][0], w, h, params)
                     for b in c["inputs"]["det_boxes"][0][:c["n"]]]
            c["crops"] = np.stack([crop(image, b, params) for b in boxes if b is not None])
        self.url, self.cases = url, cases
        self.bodies = {"stage": [encode_request(c["inputs"], ["box_embeddings"]) for c in cases],
                       "encoder": [encode_request({"images": c["crops"]}, ["embeddings"]) for c in cases]}
        self.local = threading.local()


def execution_ns(url: str) -> int:
    """clip_image's summed execution time: batch_stats count each batch once (inference_stats
    would count a batch's time once per request in it)."""
    r = requests.get(f"{url}/v2/models/clip_image/stats", timeout=10)
    r.raise_for_status()
    return sum(int(b["compute_infer"]["ns"]) for b in r.json()["model_stats"][0].get("batch_stats", []))


def stage_own_work(url: str, client: Client, count: int) -> dict:
    """At concurrency 1 (one photo per box_embed execution, its crop chunks one after the
    other): box_embed's server time per photo less the clip_image requests inside it is the
    stage's own work (reading, cropping, packing, answering)."""
    def totals():
        return {m: bench.model_stats(url, m) for m in MODELS}
    before = totals()
    client.run("stage", 1, count)
    after = totals()
    stage = after["box_embed"]["compute_infer"][1] - before["box_embed"]["compute_infer"][1]
    encoder = after["clip_image"]["success"][1] - before["clip_image"]["success"][1]
    return {"photos": count, "own_ms_per_photo": round((stage - encoder) / count / 1e6, 2),
            "encoder_ms_per_photo": round(encoder / count / 1e6, 1),
            "own_fraction": round((stage - encoder) / stage, 4)}


IMPLS = {"stage": ("box_embed", ["box_embeddings"]), "encoder": ("clip_image", ["embeddings"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder-dir", default=DEFAULT_ENCODER_DIR,
                   help="folder with clip_image.onnx (export/mobileclip.py)")
    p.add_argument("--concurrency", default="8,32")
    p.add_argument("--requests", type=int, default=16,
                   help="photos per implementation and round (at least the concurrency)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--breakdown-requests", type=int, default=12,
                   help="photos for the split of the stage's server time at concurrency 1")
    p.add_argument("--box-embed-instances", type=int, default=1,
                   help="box_embed's instance count (the config has 1)")
    p.add_argument("--min-annotations", type=int, default=8)
    p.add_argument("--max-boxes", type=int, default=10)
    p.add_argument("--name", default="encoder_stage_cpu", help="benchmarks/results/<name>.json")
    a = p.parse_args(argv)
    onnx_path = os.path.join(a.encoder_dir, "clip_image.onnx")
    if not os.path.isfile(onnx_path):
        raise SystemExit(f"{onnx_path} missing: export it (benchmarks/encoder_stage.sh does)")
    bench.IMPLS.clear()
    bench.IMPLS.update(IMPLS)
    levels = [int(c) for c in a.concurrency.split(",")]
    started = time.monotonic()

    cases = bench.load_cases(a.min_annotations, a.max_boxes)
    for note in install_backends():
        print(note)
    if not box_embed_installed():
        raise SystemExit("box_embed backend not built: run `cargo build --release -p box-embed-backend`")
    os.makedirs(WORK_DIR, exist_ok=True)
    repo = tempfile.mkdtemp(prefix="encoder-stage-", dir=WORK_DIR)
    build_repository(repo, onnx_path, a.box_embed_instances)
    server = TritonServer(repo, list(MODELS), log_path=os.path.join(WORK_DIR, "encoder_stage_tritonserver.log"))
    server.start()
    rows = []
    try:
        server.wait_ready(timeout=300)
        client = Client(server.http_url, cases)
        crops = sum(len(c["crops"]) for c in cases)
        print(f"{len(cases)} photos, {crops} crops ({crops / len(cases):.1f} per photo); encoder {onnx_path}")
        # The stage's embeddings are the encoder's on the reference crops (same model, same crops).
        worst = 1.0
        for i, c in enumerate(cases[:8]):
            got = client.infer("stage", i).outputs["box_embeddings"][0][:len(c["crops"])]
            want = client.infer("encoder", i).outputs["embeddings"]
            worst = min(worst, float(((got * want).sum(1)).min()))
        print(f"stage vs encoder on the reference crops: min cosine {worst:.6f}")
        for c in levels:
            wall = {"stage": 0.0, "encoder": 0.0}
            lat = {"stage": [], "encoder": []}
            # clip_image's own compute (Triton's statistics) per crop, in each mode.
            encoder_ns = {"stage": 0, "encoder": 0}
            crops_sent = {"stage": 0, "encoder": 0}
            for impl in IMPLS:
                client.run(impl, c, 8)  # warm-up at this level (threads, sessions, batcher)
            count = max(a.requests, c)  # fewer requests than threads would measure a lower concurrency
            for r in range(a.rounds):
                order = ("stage", "encoder") if r % 2 == 0 else ("encoder", "stage")
                for impl in order:
                    before = execution_ns(server.http_url)
                    w, ms = client.run(impl, c, count, start=r * count)
                    encoder_ns[impl] += execution_ns(server.http_url) - before
                    crops_sent[impl] += sum(len(cases[(r * count + j) % len(cases)]["crops"]) for j in range(count))
                    wall[impl] += w
                    lat[impl].extend(ms.tolist())
            n = a.rounds * count
            row = {"concurrency": c, "photos": n, "crops_per_photo": round(crops / len(cases), 2)}
            for impl in IMPLS:
                row[f"{impl}_images_per_s"] = round(n / wall[impl], 3)
                row[f"{impl}_p50_ms"] = round(float(np.percentile(lat[impl], 50)), 1)
                row[f"{impl}_encoder_compute_ms_per_crop"] = round(encoder_ns[impl] / crops_sent[impl] / 1e6, 2)
            row["stage_over_encoder"] = round(row["stage_images_per_s"] / row["encoder_images_per_s"], 3)
            rows.append(row)
            print(f"c={c:<3} stage {row['stage_images_per_s']:.2f} photos/s, encoder alone "
                  f"{row['encoder_images_per_s']:.2f} photos/s: ratio {row['stage_over_encoder']:.3f} "
                  f"({'meets' if row['stage_over_encoder'] >= 0.9 else 'below'} 0.9); clip_image compute per crop "
                  f"{row['stage_encoder_compute_ms_per_crop']:.1f} ms in the stage, "
                  f"{row['encoder_encoder_compute_ms_per_crop']:.1f} ms alone", flush=True)
        own = stage_own_work(server.http_url, client, a.breakdown_requests)
        print(f"c=1   box_embed's own work {own['own_ms_per_photo']:.1f} ms per photo beside "
              f"{own['encoder_ms_per_photo']:.1f} ms of clip_image requests: "
              f"{100 * own['own_fraction']:.2f}% of the stage")
        if not server.alive() or server.crash_lines():
            raise RuntimeError(f"tritonserver died or logged a crash:\n{log_tail(server.log_path)}")
    finally:
        print(f"tritonserver: {server.stop()}")
        shutil.rmtree(repo, ignore_errors=True)

    load = os.getloadavg()
    result = {"machine": bench.machine("cpu"), "encoder": os.path.relpath(onnx_path, REPO_ROOT),
              "box_embed_instances": a.box_embed_instances,
              "load_average_after": [round(x, 2) for x in load], "min_cosine": round(worst, 6),
              "rounds": a.rounds, "rows": rows, "concurrency_1_split": own}
    out = os.path.join(BENCH_DIR, "results", f"{a.name}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {out} in {time.monotonic() - started:.0f} s (load average {load[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
