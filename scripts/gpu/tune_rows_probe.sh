#!/usr/bin/env bash
# GPU part "tune_rows_probe" (issue 20, one call, ~9.5 min): everything issue 20 still needs
# from a GPU when only one call may come.
#   1. `oea-trt bench tune --install` for the 30B layer, every batch, objective uniform vanilla +
#      skewed k0=3 (the tiles serve OEA's small active sets too); no new batch after TUNE_S.
#   2. the issue's rows with the configs just installed (scripts/gpu/moe_floor_rows.sh).
#   3. scripts/gpu/stream_rate.py: one program's streaming rate, pointer loads against TMA.
#   RESULTS_DIR=/tmp/r [TUNE_S=200 ROWS_S=250 PROBE_S=80] bash scripts/gpu/tune_rows_probe.sh
# Copy $RESULTS_DIR/tune/<GPU>/*.json into oea_trt/moe/tuned_configs/<GPU>/ to ship them.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR/tune" "$RESULTS_DIR/stream_rate"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader
bash scripts/gpu/routing_library.sh "$RESULTS_DIR/tune/routing_kernel.log" 90
tune_s=${TUNE_S:-200}
timeout $((tune_s + 40)) python3 -m oea_trt.cli bench tune --install --output-dir "$RESULTS_DIR/tune" \
  --time-budget "$tune_s" --preset qwen3-30b-a3b --batch 1 2 4 8 16 32 64 \
  --objective uniform:vanilla skewed:3 > "$RESULTS_DIR/tune/tune.log" 2>&1
echo "tune: rc=$? after $((SECONDS - start)) s"; grep -v "^    " "$RESULTS_DIR/tune/tune.log" | tail -n 12
FLOOR_BUDGET=${ROWS_S:-250} RESULTS_DIR="$RESULTS_DIR" bash scripts/gpu/moe_floor_rows.sh | tail -n 40
echo "rows: after $((SECONDS - start)) s"
timeout $((${PROBE_S:-80} + 30)) python3 scripts/gpu/stream_rate.py --out "$RESULTS_DIR/stream_rate" \
  --budget "${PROBE_S:-80}" > "$RESULTS_DIR/stream_rate/stream_rate.log" 2>&1
echo "stream_rate: rc=$? after $((SECONDS - start)) s"; tail -n 45 "$RESULTS_DIR/stream_rate/stream_rate.log"
