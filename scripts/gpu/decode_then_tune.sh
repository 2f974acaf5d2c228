#!/usr/bin/env bash
# A second call on a machine where scripts/gpu/layout.sh just ran the GPU tests: the decode
# benchmark (scripts/gpu/decode.sh without its tests), then tuning of the 30B layer's MoE configs
# with the time left of a 10-minute call.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/decode_then_tune.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
start=$SECONDS
DECODE_TESTS=0 RESULTS_DIR="$RESULTS_DIR" bash scripts/gpu/decode.sh
left=$(( ${CALL_BUDGET:-570} - (SECONDS - start) ))
if [ "$left" -gt 60 ]; then
  mkdir -p "$RESULTS_DIR/tune"
  timeout $((left - 10)) python3 -m oea_trt.cli bench tune --install --output-dir "$RESULTS_DIR/tune" \
    --time-budget $((left - 40)) --preset qwen3-30b-a3b --batch 16 1 64 4 32 8 2 2>&1 | tee "$RESULTS_DIR/tune/tune.log" | tail -n 15
  echo "tune 30B: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
else
  echo "tune: no time left ($left s)"
fi
