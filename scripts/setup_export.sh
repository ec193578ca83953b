#!/usr/bin/env bash
# Idempotent: the export venv (default .cache/export-venv, git-ignored) with
# export/requirements-export.txt. Separate from the test venv: torch from PyPI is the CUDA
# build, about 2.8 GB of downloads and 5.7 GB on disk (77 s to install here), too much for
# every test run; scripts/verify_export.sh uses it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${EXPORT_VENV:-$PWD/.cache/export-venv}"
scripts/venv_requirements.sh "$VENV" export/requirements-export.txt
"$VENV/bin/python" -c "import torch, timm, open_clip; print('torch', torch.__version__, 'timm', timm.__version__, 'open_clip', open_clip.__version__)"
