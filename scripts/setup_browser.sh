#!/usr/bin/env bash
# Idempotent: makes Debian's headless Chromium available for the search-page browser test.
# Without root or apt-get it only says so; under scripts/test.sh that test then fails.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null; then
    exit 0
  fi
done
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "setup_browser: no chromium and no root apt-get to install it; the browser test cannot run (a failure under scripts/test.sh)" >&2
  exit 0
fi
echo "setup_browser: installing chromium (Debian package) for the browser test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
