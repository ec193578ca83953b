#!/usr/bin/env bash
# The project's test command: Rust build + unit tests, then end-to-end tests in a real Triton.
# Extra arguments go to pytest (e.g. scripts/test.sh -k coco).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --workspace
# NVRTC from PyPI lets the kernel test compile every CUDA kernel to PTX without a GPU.
eval "$(scripts/setup_nvrtc.sh)"
cargo test --release --workspace
scripts/setup_triton.sh
.venv/bin/python scripts/gen_encoders.py
# The build above must have produced the backend: missing it is a failure here, not a skip.
BOX_EMBED_REQUIRE_BACKEND=1 .venv/bin/python -m pytest tests/ -v "$@"
