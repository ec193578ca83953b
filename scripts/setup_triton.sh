#!/usr/bin/env bash
# Idempotent: venv with pinned packages, then .cache/triton/backends/{python,box_embed}.
# Env: PYTHON (interpreter for a new venv; default python3.11, else python3), TRITON_VENV.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${TRITON_VENV:-$PWD/.venv}"
PYTRITON_PIN="nvidia-pytriton==0.7.0"
REQS="scripts/requirements-test.txt"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$PWD/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ ! -x "$VENV/bin/python" ]]; then
  PY="${PYTHON:-}"
  if [[ -z "$PY" ]]; then
    PY=$(command -v python3.11 || command -v python3)
  fi
  echo "creating venv $VENV with $PY ($("$PY" --version))"
  "$PY" -m venv "$VENV"
fi

# Reinstall only when the pins change (stamp = hash of the requirements + the wheel pin).
STAMP="$VENV/.triton-test-requirements.sha256"
WANT=$( (cat "$REQS"; echo "$PYTRITON_PIN") | sha256sum | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  "$VENV/bin/python" -m pip install --quiet -r "$REQS"
  "$VENV/bin/python" -m pip install --quiet --no-deps "$PYTRITON_PIN"
  echo "$WANT" > "$STAMP"
  echo "installed pinned packages into $VENV"
else
  echo "pinned packages already installed in $VENV"
fi

TRITON_VENV="$VENV" "$VENV/bin/python" scripts/serverctl triton install-backends
TRITON_VENV="$VENV" "$VENV/bin/python" scripts/serverctl triton env
