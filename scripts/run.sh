#!/usr/bin/env bash
# The whole service on loopback: build, set up Triton, start it with the ingest ensemble, the
# text encoder and the face ensemble, start the gateway (embedded store in .cache/gateway/data,
# faces indexed on ingest), ingest the sample photos (or the folder given as $1) with the
# gateway CLI, print the search page URL, and serve until Ctrl-C; then stop the gateway and
# Triton by pid.
# GATEWAY_STORE=opensearch uses OpenSearch instead of the embedded store: the cluster at
# OPENSEARCH_URL, or a local node started (and stopped) here (docs/opensearch.md).
# CLIP_ONNX_DIR=DIR serves the exported MobileCLIP2-S2 towers in DIR (export/mobileclip.py:
# random weights, or the operator's with --checkpoint) instead of the tiny stand-ins.
# Ports: GATEWAY_PORT (8080), TRITON_HTTP_PORT (8000), TRITON_GRPC_PORT (8001), TRITON_METRICS_PORT (8002).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PHOTOS="${1:-../shared/data/coco_val2017_subset/images}"
GATEWAY_PORT="${GATEWAY_PORT:-8080}"
TRITON_GRPC_PORT="${TRITON_GRPC_PORT:-8001}"
DATA_DIR="${GATEWAY_DATA_DIR:-.cache/gateway/data}"
GATEWAY_LOG=.cache/gateway/gateway.log
# visual_ingest, region_embed and face_embed are ensembles: their composing models load first.
MODELS=preprocess,yolo,clip_image,box_embed,visual_ingest,region_embed,clip_text,face_detect,face_encoder,face_align,face_embed
GATEWAY_URL="http://127.0.0.1:${GATEWAY_PORT}"
STORE="${GATEWAY_STORE:-embedded}"
OPENSEARCH_STATE_DIR=.cache/opensearch/run-state

[[ -d "$PHOTOS" ]] || { echo "no photo folder $PHOTOS" >&2; exit 2; }

cargo build --release --workspace
scripts/setup_triton.sh
.venv/bin/python scripts/gen_encoders.py
.venv/bin/python scripts/link_models.py ${CLIP_ONNX_DIR:+--clip-onnx-dir "$CLIP_ONNX_DIR"}

gateway_pid=""
opensearch_started=""
stop_all() {
  trap - EXIT INT TERM
  if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -TERM "$gateway_pid"
    wait "$gateway_pid" || true
  fi
  .venv/bin/python scripts/serverctl triton stop || true
  if [[ -n "$opensearch_started" ]]; then
    python3 scripts/serverctl opensearch stop --state-dir "$OPENSEARCH_STATE_DIR" || true
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

.venv/bin/python scripts/serverctl triton start --models "$MODELS" --timeout 300

case "$STORE" in
  embedded) STORE_ARGS=(--store embedded) ;;
  opensearch)
    if [[ -z "${OPENSEARCH_URL:-}" ]]; then
      scripts/setup_opensearch.sh
      opensearch_started=1
      OPENSEARCH_URL=$(python3 scripts/serverctl opensearch start --print-url --state-dir "$OPENSEARCH_STATE_DIR")
    fi
    STORE_ARGS=(--store opensearch --opensearch-url "$OPENSEARCH_URL") ;;
  *) echo "GATEWAY_STORE must be embedded or opensearch, not '$STORE'" >&2; exit 2 ;;
esac

mkdir -p "$DATA_DIR" "$(dirname "$GATEWAY_LOG")"
target/release/gateway serve --listen "127.0.0.1:${GATEWAY_PORT}" --triton "http://127.0.0.1:${TRITON_GRPC_PORT}" \
  --data-dir "$DATA_DIR" --tokenizer-dir ../shared/models/clip_tokenizer --index-faces true "${STORE_ARGS[@]}" >"$GATEWAY_LOG" 2>&1 &
gateway_pid=$!

# Bounded wait until the gateway reports Triton and the store ready (or exits).
if ! python3 scripts/serverctl wait-http "$GATEWAY_URL/health" --timeout 120 --pid "$gateway_pid"; then
  echo "gateway failed to start; log $GATEWAY_LOG:" >&2
  tail -n 30 "$GATEWAY_LOG" >&2
  exit 1
fi

# --resume: a second run uploads only what is not stored yet. A failed photo is reported
# by the CLI and does not stop the service.
target/release/gateway ingest "$PHOTOS" --url "$GATEWAY_URL" --concurrency 4 --resume \
  || echo "some photos failed to ingest (listed above); serving the rest" >&2

echo
echo "Search page: ${GATEWAY_URL}/"
echo "API:         ${GATEWAY_URL}/openapi.json   health: ${GATEWAY_URL}/health   metrics: ${GATEWAY_URL}/metrics"
echo "Logs:        $GATEWAY_LOG, .cache/triton/run/tritonserver.log"
echo "Ctrl-C stops the gateway and Triton."
wait "$gateway_pid"
