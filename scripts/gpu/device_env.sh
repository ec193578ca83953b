# On the GPU machine, from the repository root: `source scripts/gpu/device_env.sh`.
# Builds (once per machine) a venv for `scripts/serverctl triton` out of what
# scripts/gpu/make_carry.sh gathered, and exports TRITON_VENV, BOX_EMBED_SO, LD_LIBRARY_PATH
# (NVRTC for the kernels) and the measurement's inputs (PREPROCESS_SO, YOLO_ONNX,
# COCO_SUBSET_DIR, PERF_ANALYZER_DIR).
# The venv's own site-packages hold the Triton pieces and numpy 1.26 (the Python backend
# needs numpy < 2); a .pth after them adds the image's PyTorch, onnx, onnxruntime, requests...
CARRY=${CARRY:-.cache/gpu-carry/box-embed}
IMAGE_VENV=${IMAGE_VENV:-/opt/torch/.venv}
GPU_VENV=${GPU_VENV:-/tmp/box-embed-gpu-venv}
if [[ ! -x "$GPU_VENV/bin/python" ]]; then
  "$IMAGE_VENV/bin/python" -m venv --without-pip "$GPU_VENV" || return 1
  site=$("$GPU_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  tar -C "$site" -xJf "$CARRY/triton-slim.tar.xz" || return 1
  "$IMAGE_VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --target "$site" \
    "$CARRY"/numpy-1.26.4-cp312-*.whl || return 1
  "$IMAGE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz_image_venv.pth"
fi
export TRITON_VENV="$GPU_VENV"
export BOX_EMBED_SO="$CARRY/libtriton_box_embed.so"
# For tests/gpu/measure_gpu.py: the ingest ensemble's pieces, the photos, perf_analyzer.
if [[ -f "$CARRY/libtriton_preprocess.so.xz" && ! -f "$GPU_VENV/libtriton_preprocess.so" ]]; then
  xz -dc "$CARRY/libtriton_preprocess.so.xz" > "$GPU_VENV/libtriton_preprocess.so" || return 1
fi
export PREPROCESS_SO="$GPU_VENV/libtriton_preprocess.so" YOLO_ONNX="$CARRY/yolov8n_int8.onnx"
export COCO_SUBSET_DIR="$CARRY/coco" PERF_ANALYZER_DIR="$CARRY"
nvrtc=$( (find "$IMAGE_VENV" /usr/local/cuda/ -name 'libnvrtc.so.13' 2>/dev/null || true) | head -1)
if [[ -n "$nvrtc" ]]; then
  export LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "TRITON_VENV=$TRITON_VENV BOX_EMBED_SO=$BOX_EMBED_SO NVRTC=${nvrtc:-not found}"
