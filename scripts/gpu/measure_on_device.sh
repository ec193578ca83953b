#!/usr/bin/env bash
# The one-shot GPU measurement of issue 20 (tests/gpu/README.md): on the GPU machine, from the
# repository root, after scripts/gpu/make_carry.sh here. Parity check, then box_embed vs the
# Python BLS baseline and the ingest ensemble in one tritonserver; everything lands in $OUT.
#   bash scripts/gpu/measure_on_device.sh [--cpu-dry-run] [measure_gpu.py options]
# --cpu-dry-run rehearses it here: the bench venv (torch, torchvision, Triton) with timm from
# the export venv, the backends as built in TARGET_DIR, would-be GPU instances on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export OUT=${OUT:-$PWD/.cache/gpu-bench/out}
mkdir -p "$OUT"
if [[ " $* " == *" --cpu-dry-run "* ]]; then
  CARRY=${CARRY:-.cache/gpu-carry/box-embed}
  TARGET_DIR=${TARGET_DIR:-target/release}
  # A venv like device_env.sh's: the bench venv (Triton, torch, torchvision, numpy 1.26) through
  # a .pth, Triton's files linked in (serverctl finds them in the venv's own site-packages),
  # and timm alone (pure Python) from the export venv, whose numpy 2 and torch stay out.
  export TRITON_VENV=${TRITON_VENV:-$PWD/.cache/gpu-bench/dry-venv}
  if [[ ! -x "$TRITON_VENV/bin/python" ]]; then
    .cache/bench-venv/bin/python -m venv --without-pip "$TRITON_VENV"
  fi
  purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
  site=$(purelib "$TRITON_VENV/bin/python") bench_site=$(purelib .cache/bench-venv/bin/python)
  for name in pytriton nvidia_pytriton.libs; do ln -sfn "$bench_site/$name" "$site/$name"; done
  ln -sfn "$(purelib .cache/export-venv/bin/python)/timm" "$site/timm"
  echo "$bench_site" > "$site/zz_bench_venv.pth"
  export BOX_EMBED_SO=${BOX_EMBED_SO:-$TARGET_DIR/libtriton_box_embed.so}
  export PREPROCESS_SO=${PREPROCESS_SO:-$TARGET_DIR/libtriton_preprocess.so}
  export YOLO_ONNX=${YOLO_ONNX:-$CARRY/yolov8n_int8.onnx} COCO_SUBSET_DIR=${COCO_SUBSET_DIR:-$CARRY/coco}
else
  # The image's encoder and baseline needs, before minutes go into the venv and the servers.
  "${IMAGE_VENV:-/opt/torch/.venv}/bin/python" -c '
import timm, torchvision
from torchvision.ops import roi_align
assert "fastvit_mci2" in timm.list_models("fastvit_mci*"), f"timm {timm.__version__} has no fastvit_mci2"
print(f"image: timm {timm.__version__} has fastvit_mci2; torchvision {torchvision.__version__} has roi_align")' \
    || { echo "FAIL: the GPU image lacks timm fastvit_mci2 or torchvision roi_align" | tee "$OUT/measure.log"; exit 1; }
  source scripts/gpu/device_env.sh
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || true
fi
set -o pipefail
PYTHONUNBUFFERED=1 "$TRITON_VENV/bin/python" tests/gpu/measure_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/measure.log"
