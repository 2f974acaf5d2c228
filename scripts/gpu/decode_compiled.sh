#!/usr/bin/env bash
# GPU part "decode_compiled" (issue 16, <= 9.5 min): the 30B-shaped model at B=16, skewed routers,
# our path (vanilla, k0=3) side by side with transformers' eager decode and its static cache +
# compile decode (transformers' generate compiles the forward with cache_implementation="static").
#   RESULTS_DIR=/tmp/r [COMPILED_BUDGET=480] bash scripts/gpu/decode_compiled.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/decode_compiled"
mkdir -p "$OUT_DIR"
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
LIMIT="${COMPILED_BUDGET:-480}"
timeout "$LIMIT" python3 -m oea_trt.cli bench decode --out "$OUT_DIR" --batch 16 --k0 3 --routers skewed \
  --hf eager compiled --hf-batch 16 --time-budget 40 --hf-time-budget $((LIMIT - 100)) 2>&1 | tee "$OUT_DIR/bench.log" | tail -n 25
echo "bench decode: rc=${PIPESTATUS[0]}"
