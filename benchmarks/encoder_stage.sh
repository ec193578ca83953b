#!/usr/bin/env bash
# One command for the crop-and-embed stage against the encoder alone (docs/models.md):
# the export venv, the MobileCLIP2-S2 image tower exported with random weights (once), the
# box_embed backend, then benchmarks/encoder_stage_bench.py (options go to it), which writes
# benchmarks/results/encoder_stage_cpu.json. ENCODER_DIR=DIR measures another export instead
# (e.g. the operator's real weights: export/mobileclip.py --checkpoint FILE --out DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENCODER_DIR="${ENCODER_DIR:-.cache/export/mobileclip2_s2_random}"
scripts/setup_triton.sh
if [[ ! -f "$ENCODER_DIR/clip_image.onnx" ]]; then
  scripts/setup_export.sh
  .cache/export-venv/bin/python export/mobileclip.py --out "$ENCODER_DIR"
fi
cargo build --release -p box-embed-backend
.venv/bin/python benchmarks/encoder_stage_bench.py --encoder-dir "$ENCODER_DIR" "$@"
