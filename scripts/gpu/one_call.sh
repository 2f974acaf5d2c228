#!/usr/bin/env bash
# Everything this session's changes must show on the GPU, squeezed into ONE 10-minute device call
# (for when machines are scarce): layout.sh's correctness block and a one-round before/after timing,
# then a trimmed decode benchmark (B 1 16 64, k0 3 5, both routers, transformers eager at B=16).
#   RESULTS_DIR=/tmp/r bash scripts/gpu/one_call.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
start=$SECONDS
LAYOUT_BUDGET=0 LAYOUT_ROUNDS=1 LAYOUT_TEST_CAP=200 RESULTS_DIR="$RESULTS_DIR" bash scripts/gpu/layout.sh
echo "== one_call: layout part done after $((SECONDS - start)) s"
OUT_DIR="$RESULTS_DIR/decode"
mkdir -p "$OUT_DIR"
left=$(( 575 - (SECONDS - start) ))
if [ "$left" -gt 100 ]; then
  timeout $((left - 5)) python3 -m oea_trt.cli bench decode --out "$OUT_DIR" --batch 16 1 64 --k0 3 5 \
    --routers skewed uniform --hf eager --hf-batch 16 --time-budget $((left - 90)) --hf-time-budget 30 \
    2>&1 | tee "$OUT_DIR/bench.log" | tail -n 30
  echo "decode bench: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
else
  echo "decode bench: no time left ($left s)"
fi
