#!/usr/bin/env bash
# Installs NVRTC (the CUDA runtime compiler, no GPU needed) from PyPI into the
# git-ignored folder .cache/nvrtc, so that `cargo test -p cuda-kernels` can
# compile every kernel to PTX on machines without CUDA.
#
# The version is pinned to CUDA 13.0 on purpose: the GPU machines run driver
# 580 (CUDA 13.0), and a driver rejects PTX from a newer NVRTC (newer PTX ISA).
#
# Usage:  eval "$(scripts/setup_nvrtc.sh)"   # exports LD_LIBRARY_PATH
# The last line of output is that export; progress goes to stderr.
set -euo pipefail

NVRTC_VERSION="13.0.88"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.cache/nvrtc"
lib_dir="$target/nvidia/cu13/lib"
stamp="$target/.installed-$NVRTC_VERSION"

if [[ ! -f "$stamp" ]]; then
    rm -rf "$target"
    mkdir -p "$target"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "$target" "nvidia-cuda-nvrtc==$NVRTC_VERSION" >&2
    touch "$stamp"
fi

if [[ ! -e "$lib_dir/libnvrtc.so.13" ]]; then
    echo "setup_nvrtc.sh: $lib_dir/libnvrtc.so.13 missing after install" >&2
    exit 1
fi

echo "NVRTC $NVRTC_VERSION in $lib_dir" >&2
# cudarc dlopen()s libnvrtc by name, so the loader's search path must hold it.
echo "export LD_LIBRARY_PATH=\"$lib_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
