#!/usr/bin/env bash
# The project's test command: Rust build + unit tests, then end-to-end tests in a real Triton;
# both run against one real OpenSearch node and one three-node OpenSearch cluster started here.
# docs/testing.md describes it.
# Extra arguments go to pytest (e.g. scripts/test.sh -k coco).
#
# Every test must run: REQUIRE_ALL_TESTS=1 turns a skip into a failure, in Rust (the
# test-skip crate) and in pytest (tests/conftest.py). Only tests that need a GPU may skip;
# they are written to GPU_SKIP_LOG and counted into one summary line at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export REQUIRE_ALL_TESTS=1
GPU_SKIP_LOG=$(mktemp)
export GPU_SKIP_LOG
OPENSEARCH_STATE_DIR=""
OPENSEARCH_CLUSTER_STATE_DIR=""

finish() {
  local status=$?
  if [[ -n "$OPENSEARCH_STATE_DIR" ]]; then
    python3 scripts/serverctl opensearch stop --state-dir "$OPENSEARCH_STATE_DIR" || true
    rm -rf "$OPENSEARCH_STATE_DIR"
  fi
  if [[ -n "$OPENSEARCH_CLUSTER_STATE_DIR" ]]; then
    python3 scripts/serverctl opensearch-cluster stop --state-dir "$OPENSEARCH_CLUSTER_STATE_DIR" || true
    rm -rf "$OPENSEARCH_CLUSTER_STATE_DIR"
  fi
  local gpu_skips
  gpu_skips=$(grep -c . "$GPU_SKIP_LOG" || true)
  if [[ "$gpu_skips" -gt 0 ]]; then
    echo "$gpu_skips GPU tests skipped: no GPU"
  fi
  rm -f "$GPU_SKIP_LOG"
  if [[ $status -ne 0 ]]; then
    echo "scripts/test.sh: FAILED (exit $status)" >&2
  fi
  exit "$status"
}
trap finish EXIT

# Style first: a formatting slip fails in a second, before any build.
cargo fmt --all --check
cargo build --release --workspace
cargo clippy --workspace --all-targets --release -- -D warnings
# NVRTC from PyPI lets the kernel test compile every CUDA kernel to PTX without a GPU. The
# assignment, not `eval "$(...)"`, so that a failing setup stops the run here.
nvrtc_env=$(scripts/setup_nvrtc.sh)
eval "$nvrtc_env"
# --- OpenSearch (docs/opensearch.md): one node for cargo test and pytest, stopped on exit;
# an OPENSEARCH_URL already set points both at that cluster instead and starts nothing.
if [[ -z "${OPENSEARCH_URL:-}" ]]; then
  scripts/setup_opensearch.sh
  OPENSEARCH_STATE_DIR=$(mktemp -d)
  if ! OPENSEARCH_URL=$(python3 scripts/serverctl opensearch start --print-url --state-dir "$OPENSEARCH_STATE_DIR"); then
    echo "error: the OpenSearch node did not start (reason above); the tests need it" >&2
    exit 1
  fi
  export OPENSEARCH_URL
fi
# The three-node cluster (docs/opensearch.md, "A cluster of three nodes") for the store on
# replicated shards: its URLs, comma-separated, and its state folder, through which the
# failure tests kill and restart its nodes by pid. An OPENSEARCH_CLUSTER_URLS already set
# points the contract suite at that cluster and starts nothing.
if [[ -z "${OPENSEARCH_CLUSTER_URLS:-}" ]]; then
  scripts/setup_opensearch.sh
  OPENSEARCH_CLUSTER_STATE_DIR=$(mktemp -d)
  if ! OPENSEARCH_CLUSTER_URLS=$(python3 scripts/serverctl opensearch-cluster start --print-urls \
      --state-dir "$OPENSEARCH_CLUSTER_STATE_DIR"); then
    echo "error: the OpenSearch cluster did not start (reason above); the tests need it" >&2
    exit 1
  fi
  export OPENSEARCH_CLUSTER_URLS OPENSEARCH_CLUSTER_STATE_DIR
fi
# --- end OpenSearch
cargo test --release --workspace
scripts/setup_triton.sh
.venv/bin/ruff check .
scripts/setup_browser.sh
# docker-compose, hadolint, kubernetes-validate, ... for the deployment files' checks.
scripts/setup_deploy_checks.sh
# Debian's Prometheus (and promtool) for the monitoring tests.
scripts/setup_prometheus.sh
.venv/bin/python scripts/gen_encoders.py
.venv/bin/python scripts/link_models.py
# The build above must have produced the backends and the gateway: missing one is a failure.
.venv/bin/python -m pytest tests/ -v -rs "$@"
