#!/usr/bin/env bash
# GPU part "routed_tune_rows" (issue 20, one call, ~6 min): does tuning on routing+MoE time (the
# routing kernel in the graph, `bench tune --timing routed`) ship better configs than tuning on
# MoE-only time? On one machine:
#   1. the issue's rows with the configs the package ships for this GPU -> before/ (ROWS_S);
#   2. `oea-trt bench tune --install --timing routed` for the 30B layer, default objective
#      (uniform vanilla + skewed k0=3) -> tune/ (TUNE_S; it holds the file it installed);
#   3. the rows again with the configs just installed -> after/ (ROWS_S);
#   4. tests/test_moe_tuned.py (the installed file reads, and a call runs with it).
#   RESULTS_DIR=/tmp/r [ROWS_S=150 TUNE_S=120] bash scripts/gpu/routed_tune_rows.sh
# (ROWS_ROUTING, ROWS_K0, ROWS_REPEATS narrow the rows: see moe_floor_rows.sh)
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR/tune"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader
rows() {
  FLOOR_BUDGET=${ROWS_S:-150} RESULTS_DIR="$RESULTS_DIR/$1" bash scripts/gpu/moe_floor_rows.sh | grep -A 10 "skewed routing: MoE only"
  grep -A 6 "^## Headline" "$RESULTS_DIR/$1/moe_floor_rows/report.md"
  echo "rows $1: after $((SECONDS - start)) s"
}
rows before
tune_s=${TUNE_S:-120}
timeout $((tune_s + 60)) python3 -m oea_trt.cli bench tune --output-dir "$RESULTS_DIR/tune" --install \
  --time-budget "$tune_s" --preset qwen3-30b-a3b --batch 1 2 4 8 16 32 64 > "$RESULTS_DIR/tune/tune.log" 2>&1
echo "tune: rc=$? after $((SECONDS - start)) s"; grep -v "^    " "$RESULTS_DIR/tune/tune.log" | tail -n 12
git status --short oea_trt/moe/tuned_configs
rows after
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_moe_tuned.py 2>&1 | tail -n 2
