#!/usr/bin/env bash
# The embedded store at 1,000,000 images (issue 17; benchmarks/README.md, "The embedded store
# at scale"): builds the store_scale example and the gateway, runs the example (bulk insert,
# search latency and recall@10 per kind and filter, memory, reopen after drop and after
# kill -9, search while writing), then the gateway's text search over the same store.
#
#   benchmarks/store_scale.sh                          # 1,000,000 images: about 51 min here
#                                                      # (45 of them the fill); 19 GB of disk
#   benchmarks/store_scale.sh --reuse-from benchmarks/results/store_scale_1000000_build.json \
#       --out /tmp/again.json                          # measure that store again: minutes
#   benchmarks/store_scale.sh --images 20000           # a quick check
#   benchmarks/store_scale.sh --source DIR --writer-seconds 60   # other options go to the example
#
# Not part of benchmarks/run.sh's default parts (that run stays under 15 minutes); `run.sh
# store` measures the same at 100,000 images. SKIP_SETUP=1 skips benchmarks/setup.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The example's defaults; the two the HTTP part needs too are read from the arguments.
data_dir=.cache/bench/store-scale
out=benchmarks/results/store_scale.json
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --data-dir) data_dir=${args[i + 1]:?--data-dir needs a value} ;;
    --out) out=${args[i + 1]:?--out needs a value} ;;
  esac
done

export BENCH_VENV="${BENCH_VENV:-$PWD/.cache/bench-venv}"
export TRITON_VENV="$BENCH_VENV"
[[ ${SKIP_SETUP:-} == 1 ]] || bash benchmarks/setup.sh
cargo build --release --workspace
cargo build --release -p visual-store --example store_scale
# The HTTP part's tritonserver needs the stand-in encoders and the linked weights (both
# idempotent; scripts/run.sh and scripts/test.sh do the same).
"$BENCH_VENV/bin/python" scripts/gen_encoders.py
"$BENCH_VENV/bin/python" scripts/link_models.py

started=$SECONDS
target/release/examples/store_scale "$@"
echo "=== store_scale example: $((SECONDS - started)) s"
started=$SECONDS
"$BENCH_VENV/bin/python" benchmarks/store_scale_http.py --data-dir "$data_dir" --out "$out" \
  ${STORE_SCALE_HTTP_ARGS:-}
echo "=== gateway text search: $((SECONDS - started)) s"
echo "results: $out (the store stays in $data_dir/store)"
