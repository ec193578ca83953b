#!/usr/bin/env bash
# The one benchmark command: set up the benchmark venv, build the Rust backend, run the
# harness (arguments pass through, e.g. --device gpu, --requests 400). See benchmarks/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BENCH_VENV="${BENCH_VENV:-$PWD/.cache/bench-venv}"
bash benchmarks/setup.sh
cargo build --release -p box-embed-backend
exec "$BENCH_VENV/bin/python" benchmarks/box_embed_bench.py "$@"
