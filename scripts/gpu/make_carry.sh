#!/usr/bin/env bash
# Here (any machine, no GPU needed): gather what the GPU machine needs to run the box_embed
# GPU checks into .cache/gpu-carry/box-embed (git-ignored; under the device tool's 64 MiB):
#   libtriton_box_embed.so   release build, debug info stripped
#   triton-slim.tar.xz       from the nvidia-pytriton wheel: tritonserver, its libs without the
#                            bundled libpython, the Python backend and the 3.12 stub
#   numpy-1.26.4-*.whl       cp312: the Python backend fails with numpy 2 (the GPU image's)
# On the GPU machine, scripts/gpu/device_env.sh turns these into a server environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=.cache/gpu-carry/box-embed
mkdir -p "$OUT"

cargo build --release -p box-embed-backend
strip --strip-debug -o "$OUT/libtriton_box_embed.so.tmp" target/release/libtriton_box_embed.so
mv "$OUT/libtriton_box_embed.so.tmp" "$OUT/libtriton_box_embed.so"

scripts/setup_triton.sh >/dev/null
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ ! -f "$OUT/triton-slim.tar.xz" ]]; then
  tar -C "$SITE" --exclude='libpython*' -cJf "$OUT/triton-slim.tar.xz.tmp" \
    pytriton/tritonserver/bin/tritonserver nvidia_pytriton.libs \
    pytriton/tritonserver/backends/python/libtriton_python.so \
    pytriton/tritonserver/backends/python/triton_python_backend_utils.py \
    pytriton/tritonserver/python_backend_stubs/3.12
  mv "$OUT/triton-slim.tar.xz.tmp" "$OUT/triton-slim.tar.xz"
fi
if ! ls "$OUT"/numpy-1.26.4-cp312-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download --quiet --no-deps numpy==1.26.4 --python-version 3.12 \
    --only-binary=:all: --platform manylinux2014_x86_64 -d "$OUT"
fi
du -sh "$OUT"/*
du -sh "$OUT"
