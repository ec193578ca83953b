#!/usr/bin/env bash
# Build, set up, and serve box_embed + clip_image on loopback until Ctrl-C.
# Ports: TRITON_HTTP_PORT (8000), TRITON_GRPC_PORT (8001), TRITON_METRICS_PORT (8002).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --workspace
scripts/setup_triton.sh
.venv/bin/python scripts/gen_encoders.py
exec .venv/bin/python scripts/tritonctl.py run --models box_embed,clip_image "$@"
