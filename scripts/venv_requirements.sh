#!/usr/bin/env bash
# Idempotent: makes VENV (with python3.11 when there is one) and installs REQUIREMENTS into
# it, again only when the file changed (a stamp in the venv holds its hash). No pip cache:
# the CUDA wheels of some of these files would leave a second copy of several GB.
#
#   scripts/venv_requirements.sh VENV REQUIREMENTS
set -euo pipefail
venv=${1:?usage: venv_requirements.sh VENV REQUIREMENTS}
requirements=${2:?usage: venv_requirements.sh VENV REQUIREMENTS}

if [[ ! -x "$venv/bin/python" ]]; then
  "$(command -v python3.11 || command -v python3)" -m venv "$venv"
fi
stamp="$venv/.installed-$(basename "$requirements").sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$requirements already installed in $venv"
  exit 0
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet --no-cache-dir -r "$requirements"
echo "$want" >"$stamp"
echo "installed $requirements into $venv"
