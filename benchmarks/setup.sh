#!/usr/bin/env bash
# Idempotent: the benchmark venv (default .cache/bench-venv, git-ignored) = the test venv's pins
# (via scripts/setup_triton.sh) + benchmarks/requirements-bench.txt (torch for the baseline).
# A separate venv keeps ~3 GB of CUDA torch out of the test venv and away from test servers
# running from it; BENCH_VENV=.venv installs into the project venv instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${BENCH_VENV:-$PWD/.cache/bench-venv}"
REQS="benchmarks/requirements-bench.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

TRITON_VENV="$VENV" scripts/setup_triton.sh

STAMP="$VENV/.bench-requirements.sha256"
WANT=$(sha256sum "$REQS" | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  # No pip cache: it would keep a second 3 GB copy of the CUDA wheels.
  "$VENV/bin/python" -m pip install --quiet --no-cache-dir -r "$REQS"
  echo "$WANT" > "$STAMP"
  echo "installed benchmark packages into $VENV"
else
  echo "benchmark packages already installed in $VENV"
fi
"$VENV/bin/python" -c "import numpy, torch, torchvision; print('numpy', numpy.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
