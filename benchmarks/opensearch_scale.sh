#!/usr/bin/env bash
# The OpenSearch store on one node and on a three-node cluster, one after the other in one
# run (docs/scaling.md, "Measured on this machine"): the opensearch_rates example (bulk
# insert, image / object / tag-filtered search latency and 8-client throughput, recall@10
# against brute force, index size and HNSW bytes per million vectors) against a single node
# (replicas 0) and against the cluster (2 shards x 1 replica), both on loopback.
#
#   benchmarks/opensearch_scale.sh [IMAGES]     # default 20,000 images (100,000 vectors)
#
# Writes benchmarks/results/opensearch_scale.json. Every node started here is stopped by
# pid on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

images=${1:-20000}
out=benchmarks/results/opensearch_scale.json
work=$(mktemp -d)
node_state="$work/node"
cluster_state="$work/cluster"
cleanup() {
  python3 scripts/serverctl opensearch stop --state-dir "$node_state" >/dev/null 2>&1 || true
  python3 scripts/serverctl opensearch-cluster stop --state-dir "$cluster_state" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

scripts/setup_opensearch.sh
cargo build --release -p visual-store --example opensearch_rates
rates=target/release/examples/opensearch_rates

url=$(python3 scripts/serverctl opensearch start --print-url --state-dir "$node_state")
"$rates" --urls "$url" --images "$images" --label one-node --replicas 0 --out "$work/one-node.json"
# One set of JVMs at a time: both share this machine's cores and memory.
python3 scripts/serverctl opensearch stop --state-dir "$node_state"

urls=$(python3 scripts/serverctl opensearch-cluster start --print-urls --state-dir "$cluster_state")
"$rates" --urls "$urls" --images "$images" --label three-nodes --out "$work/three-nodes.json"

python3 - "$out" "$work/one-node.json" "$work/three-nodes.json" <<'PY'
import json
import os
import platform
import sys

out, *runs = sys.argv[1:]
with open("/proc/meminfo") as f:
    memory_kib = int(f.readline().split()[1])
report = {
    "machine": {"cores": os.cpu_count(), "memory_gib": round(memory_kib / 2**20, 2), "python": platform.python_version()},
    "note": "every node on this one machine: the cluster shares its cores, so it shows replication's cost, not scale-out's gain",
    "runs": [json.load(open(path)) for path in runs],
}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(report, f, indent=2)
print(f"wrote {out}")
PY
