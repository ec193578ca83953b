#!/usr/bin/env bash
# Build the TensorRT plans of the GPU model repository, at deploy time, INSIDE the Triton
# container on the serving GPU (a plan only runs on the GPU model and TensorRT version it was
# built with). Not run in this project's CI (no GPU); docs/models.md has the whole procedure.
#
#   scripts/build_engines.sh ONNX_DIR [REPO] [--force]
#
# ONNX_DIR holds clip_image.onnx, clip_text.onnx (export/mobileclip.py), yolo_end2end.onnx
# (export/yolo_end2end.py) and face_encoder.onnx (export/face_models.py). REPO is the GPU
# repository from scripts/gen_gpu_repository.py (default deploy/model_repository_gpu). Each
# plan goes to REPO/<model>/1/model.sm<CC>.plan, CC being this GPU's compute capability, the
# name the config's cc_model_filenames picks. Shapes (min/opt/max batch) and precision come
# from `scripts/gen_gpu_repository.py --engines`, so they follow the configs. An existing plan
# newer than its ONNX file is kept unless --force.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ONNX_DIR="${1:?usage: scripts/build_engines.sh ONNX_DIR [REPO] [--force]}"
REPO="${2:-deploy/model_repository_gpu}"
FORCE="${3:-}"
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
[[ -x "$TRTEXEC" ]] || { echo "trtexec not found (set TRTEXEC); run this inside the Triton container" >&2; exit 2; }
[[ -d "$REPO" ]] || { echo "no GPU repository at $REPO: run scripts/gen_gpu_repository.py --out $REPO" >&2; exit 2; }

CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' ')
SM="sm${CC//./}"
grep -q "\"model.${SM}.plan\"" "$REPO/clip_image/config.pbtxt" \
  || { echo "compute capability $CC is not in the configs' cc_model_filenames (scripts/gen_gpu_repository.py)" >&2; exit 2; }

# "name:3x256x256,other:77" at batch B -> "name:Bx3x256x256,other:Bx77"
shapes_at() {
  local spec=$1 batch=$2 out="" item
  IFS=, read -ra items <<<"$spec"
  for item in "${items[@]}"; do
    out+="${out:+,}${item%%:*}:${batch}x${item#*:}"
  done
  echo "$out"
}

python3 scripts/gen_gpu_repository.py --engines | while IFS=$'\t' read -r model onnx inputs lo opt hi precision; do
  src="$ONNX_DIR/$onnx"
  plan="$REPO/$model/1/model.${SM}.plan"
  [[ -f "$src" ]] || { echo "$model: $src missing" >&2; exit 1; }
  if [[ -z "$FORCE" && -f "$plan" && "$plan" -nt "$src" ]]; then
    echo "$model: $plan up to date"
    continue
  fi
  args=(--onnx="$src" --saveEngine="$plan.tmp" --skipInference
        --minShapes="$(shapes_at "$inputs" "$lo")" --optShapes="$(shapes_at "$inputs" "$opt")"
        --maxShapes="$(shapes_at "$inputs" "$hi")")
  # FP16 compute, FP32 tensors at the edges: the configs' data types stay as they are.
  [[ "$precision" == fp16 ]] && args+=(--fp16)
  echo "$model: building $plan ($precision, batch $lo/$opt/$hi)"
  "$TRTEXEC" "${args[@]}" > "$REPO/$model/1/trtexec.${SM}.log" 2>&1 \
    || { echo "$model: trtexec failed, log $REPO/$model/1/trtexec.${SM}.log" >&2; tail -n 20 "$REPO/$model/1/trtexec.${SM}.log" >&2; exit 1; }
  mv "$plan.tmp" "$plan"
done
