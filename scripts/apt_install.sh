#!/usr/bin/env bash
# apt_install.sh CALLER PACKAGE CONSEQUENCE: installs a Debian package (without recommends)
# for the test command's setup scripts. Without root or apt-get it says what cannot run and
# exits 1, and the caller carries on: under scripts/test.sh the tests that need it then fail.
set -euo pipefail
caller=$1 package=$2 consequence=$3

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "$caller: $package is not installed and there is no root apt-get to install it; $consequence (a failure under scripts/test.sh)" >&2
  exit 1
fi
echo "$caller: installing $package (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "$package" >/dev/null
