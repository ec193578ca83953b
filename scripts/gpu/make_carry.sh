#!/usr/bin/env bash
# Here (any machine, no GPU needed): gather what the GPU machine needs to run the box_embed
# GPU checks and the measurement into .cache/gpu-carry/box-embed (git-ignored; with the
# working tree under the device tool's 64 MiB):
#   libtriton_box_embed.so        release build, debug info stripped
#   libtriton_preprocess.so.xz    release build, stripped, xz (the ingest ensemble's first step)
#   triton-slim.tar.xz            from the nvidia-pytriton wheel: tritonserver, its libs without the
#                                 bundled libpython, the Python backend and the 3.12 stub
#   numpy-1.26.4-*.whl            cp312: the Python backend fails with numpy 2 (the GPU image's)
#   yolov8n_int8.onnx             the detector of the ingest ensemble (../shared/models)
#   coco/                         the first PHOTOS COCO photos with >= 8 annotated boxes, and
#                                 their annotations (../shared does not travel)
#   perf_analyzer-2.60.0-*.whl    glibc >= 2.38, so it runs on the GPU machine only
# On the GPU machine, scripts/gpu/device_env.sh turns these into a server environment.
#   scripts/gpu/make_carry.sh [--no-build]   --no-build: take the .so files as built in
#                                            TARGET_DIR (default target/release), no cargo
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=.cache/gpu-carry/box-embed
TARGET_DIR=${TARGET_DIR:-target/release}
PHOTOS=${PHOTOS:-16}
SHARED=${SHARED:-../shared}
LIMIT_MIB=64
mkdir -p "$OUT"

if [[ "${1:-}" != "--no-build" ]]; then
  cargo build --release -p box-embed-backend -p preprocess-backend
fi
strip --strip-debug -o "$OUT/libtriton_box_embed.so.tmp" "$TARGET_DIR/libtriton_box_embed.so"
mv "$OUT/libtriton_box_embed.so.tmp" "$OUT/libtriton_box_embed.so"
strip --strip-debug -o "$OUT/libtriton_preprocess.so.tmp" "$TARGET_DIR/libtriton_preprocess.so"
xz -f -T1 "$OUT/libtriton_preprocess.so.tmp"
mv "$OUT/libtriton_preprocess.so.tmp.xz" "$OUT/libtriton_preprocess.so.xz"

if [[ ! -f "$OUT/triton-slim.tar.xz" ]]; then
  scripts/setup_triton.sh >/dev/null
  SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
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
if ! ls "$OUT"/perf_analyzer-2.60.0-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_38_x86_64 perf-analyzer==2.60.0 -d "$OUT"
fi
cp "$SHARED/models/yolov8n_int8/yolov8n_int8.onnx" "$OUT/yolov8n_int8.onnx"

# The photos box_embed_bench.py would pick first (sorted by name, >= 8 annotations).
rm -rf "$OUT/coco" && mkdir -p "$OUT/coco/images"
.venv/bin/python - "$SHARED/data/coco_val2017_subset" "$OUT/coco" "$PHOTOS" <<'PY'
import collections, json, shutil, sys
src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(f"{src}/instances_val2017_subset.json") as f:
    data = json.load(f)
per_image = collections.Counter(a["image_id"] for a in data["annotations"])
images = sorted((im for im in data["images"] if per_image[im["id"]] >= 8), key=lambda im: im["file_name"])[:count]
ids = {im["id"] for im in images}
for im in images:
    shutil.copy(f"{src}/images/{im['file_name']}", f"{dst}/images/")
subset = {"images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
with open(f"{dst}/instances_val2017_subset.json", "w") as f:
    json.dump(subset, f)
print(f"coco: {len(images)} photos, {len(subset['annotations'])} annotations")
PY

du -sh "$OUT"/*
carry=$(du -sbL "$OUT" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "carry $((carry / 1024 / 1024)) MiB + tracked tree $((tree / 1024 / 1024)) MiB (limit ${LIMIT_MIB} MiB together)"
if (( carry + tree > LIMIT_MIB * 1024 * 1024 )); then
  echo "too large for the device tool: drop the perf_analyzer wheel or use fewer PHOTOS" >&2
  exit 1
fi
