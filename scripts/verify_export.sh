#!/usr/bin/env bash
# The export check (docs/models.md): sets up the export venv, then tests export/ on CPU:
# MobileCLIP2-S2 with random weights (ONNX Runtime vs PyTorch, tensors vs the configs,
# tokenizer ids, checkpoint loading). The ONNX-only steps (YOLO end2end, face encoder) are
# checked by tests/test_export_onnx.py in scripts/test.sh.
# Not part of scripts/test.sh: the venv costs ~2.8 GB of downloads (CUDA torch from PyPI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${EXPORT_VENV:-$PWD/.cache/export-venv}"
EXPORT_VENV="$VENV" scripts/setup_export.sh
"$VENV/bin/python" -m pytest export/ -v -W ignore::DeprecationWarning "$@"
