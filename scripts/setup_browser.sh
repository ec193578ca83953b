#!/usr/bin/env bash
# Idempotent: makes Debian's headless Chromium available for the search-page browser test.
# Without root or apt-get it only says so; under scripts/test.sh that test then fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null; then
    exit 0
  fi
done
scripts/apt_install.sh setup_browser chromium "the browser tests cannot run" || exit 0
