#!/usr/bin/env bash
# Idempotent: the benchmark venv (default .cache/bench-venv, git-ignored) = the test venv's pins
# (via scripts/setup_triton.sh) + benchmarks/requirements-bench.txt (torch for the baseline).
# A separate venv keeps ~3 GB of CUDA torch out of the test venv and away from test servers
# running from it; BENCH_VENV=.venv installs into the project venv instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${BENCH_VENV:-$PWD/.cache/bench-venv}"

TRITON_VENV="$VENV" scripts/setup_triton.sh
scripts/venv_requirements.sh "$VENV" benchmarks/requirements-bench.txt
"$VENV/bin/python" -c "import numpy, torch, torchvision; print('numpy', numpy.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
