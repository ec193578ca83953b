#!/usr/bin/env bash
# Control a tritonserver on loopback: start | stop | status | run | env (see `python3 scripts/serverctl triton -h`).
# Ports: --http-port/--grpc-port/--metrics-port or TRITON_HTTP_PORT/TRITON_GRPC_PORT/TRITON_METRICS_PORT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${TRITON_VENV:-$PWD/.venv}"
[[ -x "$VENV/bin/python" ]] || { echo "no venv at $VENV: run scripts/setup_triton.sh" >&2; exit 1; }
exec "$VENV/bin/python" scripts/serverctl triton "$@"
