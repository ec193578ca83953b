#!/usr/bin/env bash
# The one benchmark command (benchmarks/README.md): sets up the benchmark venv, builds what
# the benchmarks run, then runs the parts in turn and prints each part's wall time.
#
#   benchmarks/run.sh                              # every part: box_embed pipeline faces
#   benchmarks/run.sh pipeline faces               # only these parts
#   benchmarks/run.sh box_embed --device gpu       # one part; the options go to its script
#
# Parts: box_embed = box_embed_bench.py (Rust stage vs the Python BLS baseline),
# pipeline = pipeline_bench.py (ensemble, gateway ingest, text search at 235 / 10,000 /
# 100,000 images), faces = faces_bench.py (face endpoints); store = store_bench.py (the
# embedded store at 100,000 images: the store_scale example and the gateway's text search
# over its store). `store` runs only when named: it takes 15-20 minutes on its own, and
# the default run stays under 15 minutes. At 1,000,000 images: benchmarks/store_scale.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALL_PARTS=(box_embed pipeline faces)
NAMED_ONLY_PARTS=(store)
parts=()
while [[ $# -gt 0 && $1 != -* ]]; do
  case " ${ALL_PARTS[*]} ${NAMED_ONLY_PARTS[*]} " in
    *" $1 "*) parts+=("$1"); shift ;;
    *) echo "unknown part '$1' (parts: ${ALL_PARTS[*]} ${NAMED_ONLY_PARTS[*]})" >&2; exit 2 ;;
  esac
done
[[ ${#parts[@]} -gt 0 ]] || parts=("${ALL_PARTS[@]}")
if [[ $# -gt 0 && ${#parts[@]} -ne 1 ]]; then
  echo "options ($*) go to one part's script: name that one part first" >&2
  exit 2
fi

# CLIP_ONNX_DIR=DIR: every part serves the exported MobileCLIP2-S2 towers in DIR
# (export/mobileclip.py) instead of the generated stand-ins.
export BENCH_VENV="${BENCH_VENV:-$PWD/.cache/bench-venv}"
# Every part's tritonserver runs from the benchmark venv (the test pins plus torch).
export TRITON_VENV="$BENCH_VENV"
bash benchmarks/setup.sh
cargo build --release --workspace
cargo build --release -p visual-store --example fill_store --example store_scale
if [[ -n "${CLIP_ONNX_DIR:-}" ]]; then
  export CLIP_ONNX_DIR
  .venv/bin/python scripts/link_models.py --clip-onnx-dir "$CLIP_ONNX_DIR"
fi

for part in "${parts[@]}"; do
  started=$SECONDS
  echo "=== $part"
  "$BENCH_VENV/bin/python" "benchmarks/${part}_bench.py" "$@"
  echo "=== $part: $((SECONDS - started)) s"
done
echo "=== total (setup, build and ${parts[*]}): $SECONDS s"
