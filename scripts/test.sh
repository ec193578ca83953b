#!/usr/bin/env bash
# The project's test command: Rust build + unit tests, then end-to-end tests in a real Triton;
# both run against one real OpenSearch node started here.
# Extra arguments go to pytest (e.g. scripts/test.sh -k coco).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --workspace
# NVRTC from PyPI lets the kernel test compile every CUDA kernel to PTX without a GPU.
eval "$(scripts/setup_nvrtc.sh)"
# --- OpenSearch (docs/opensearch.md): one node for cargo test and pytest, stopped on exit;
# an OPENSEARCH_URL already set points both at that cluster instead and starts nothing.
if [[ -z "${OPENSEARCH_URL:-}" ]]; then
  scripts/setup_opensearch.sh
  OPENSEARCH_STATE_DIR=$(mktemp -d)
  trap 'python3 scripts/opensearchctl.py stop --state-dir "$OPENSEARCH_STATE_DIR"; rm -rf "$OPENSEARCH_STATE_DIR"' EXIT
  if ! OPENSEARCH_URL=$(python3 scripts/opensearchctl.py start --print-url --state-dir "$OPENSEARCH_STATE_DIR"); then
    echo "error: the OpenSearch node did not start (reason above); the tests need it" >&2
    exit 1
  fi
  export OPENSEARCH_URL
fi
# --- end OpenSearch
cargo test --release --workspace
scripts/setup_triton.sh
scripts/setup_browser.sh
.venv/bin/python scripts/gen_encoders.py
.venv/bin/python scripts/link_models.py
# The build above must have produced the backend: missing it is a failure here, not a skip.
BOX_EMBED_REQUIRE_BACKEND=1 GATEWAY_REQUIRE=1 .venv/bin/python -m pytest tests/ -v "$@"
