#!/usr/bin/env bash
# On the GPU machine, from the repository root, after scripts/gpu/make_carry.sh here (see
# tests/gpu/README.md). Extra arguments go to tests/gpu/check_gpu_instances.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/gpu/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || true
PYTHONUNBUFFERED=1 "$TRITON_VENV/bin/python" tests/gpu/check_gpu_instances.py \
  --backend-so "$BOX_EMBED_SO" --log-dir "${OUT:-.cache/triton/gpu-check}" "$@"
