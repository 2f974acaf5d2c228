#!/usr/bin/env bash
# GPU part "tune_rows_probe" (issue 20, one call, ~8 min): everything issue 20 still needs
# from a GPU when only one call may come, most needed first.
#   1. the issue's rows with the shipped configs (scripts/gpu/moe_floor_rows.sh), ROWS_S.
#   2. scripts/gpu/stream_rate.py: one program's streaming rate, pointer loads against TMA, PROBE_S.
#   3. `oea-trt bench tune` for the 30B layer, every batch, objective uniform vanilla + skewed
#      k0=3 (the tiles serve OEA's small active sets too); no new batch after TUNE_S. Its files
#      are not installed: rows for them need another run.
#   RESULTS_DIR=/tmp/r [ROWS_S=260 PROBE_S=60 TUNE_S=150 (0: no tune)] bash scripts/gpu/tune_rows_probe.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR/tune" "$RESULTS_DIR/stream_rate"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader
bash scripts/gpu/routing_library.sh "$RESULTS_DIR/tune/routing_kernel.log" 90
FLOOR_BUDGET=${ROWS_S:-260} RESULTS_DIR="$RESULTS_DIR" bash scripts/gpu/moe_floor_rows.sh | tail -n 40
echo "rows: after $((SECONDS - start)) s"
timeout $((${PROBE_S:-60} + 30)) python3 scripts/gpu/stream_rate.py --out "$RESULTS_DIR/stream_rate" \
  --budget "${PROBE_S:-60}" > "$RESULTS_DIR/stream_rate/stream_rate.log" 2>&1
echo "stream_rate: rc=$? after $((SECONDS - start)) s"; tail -n 45 "$RESULTS_DIR/stream_rate/stream_rate.log"
tune_s=${TUNE_S:-150}
[ "$tune_s" -gt 0 ] || { echo "tune: skipped (TUNE_S=0)"; exit 0; }
timeout $((tune_s + 40)) python3 -m oea_trt.cli bench tune --output-dir "$RESULTS_DIR/tune" \
  --time-budget "$tune_s" --preset qwen3-30b-a3b --batch 1 2 4 8 16 32 64 \
  --objective uniform:vanilla skewed:3 > "$RESULTS_DIR/tune/tune.log" 2>&1
echo "tune: rc=$? after $((SECONDS - start)) s"; grep -v "^    " "$RESULTS_DIR/tune/tune.log" | tail -n 12
