#!/usr/bin/env bash
# GPU part "ship_call" (issue 20, one call, <= 9.5 min): on one machine, after a kernel change
# that adds tuner candidates:
#   1. the MoE GPU tests (tests/test_moe_gpu.py, tests/test_moe_tuned.py) on this tree;
#   2. `oea-trt bench tune --install` for the 30B layer (routed timing, default objective)
#      -> tune/ (TUNE_S);
#   3. the issue's rows with the configs just installed -> after/ (skewed routing; ROWS_K0),
#      in what is left of DEADLINE_S.
#   RESULTS_DIR=/tmp/r [DEADLINE_S=560 TUNE_S=140 ROWS_K0="3 5"] bash scripts/gpu/ship_call.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR/tune"
start=$SECONDS
deadline=${DEADLINE_S:-560}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$RESULTS_DIR/gpu.txt"
timeout 220 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py tests/test_moe_tuned.py \
  > "$RESULTS_DIR/gpu_tests.log" 2>&1
echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 3 "$RESULTS_DIR/gpu_tests.log"
tune_s=${TUNE_S:-140}
timeout $((tune_s + 50)) python3 -m oea_trt.cli bench tune --output-dir "$RESULTS_DIR/tune" --install \
  --time-budget "$tune_s" --preset qwen3-30b-a3b --batch 1 2 4 8 16 32 64 > "$RESULTS_DIR/tune/tune.log" 2>&1
echo "tune: rc=$? after $((SECONDS - start)) s"; grep -v "^    " "$RESULTS_DIR/tune/tune.log" | tail -n 12
git status --short oea_trt/moe/tuned_configs
cp -r oea_trt/moe/tuned_configs "$RESULTS_DIR/tune/installed"
left=$(( deadline - (SECONDS - start) ))
if [ "$left" -gt 60 ]; then
  FLOOR_BUDGET=$left ROWS_ROUTING=skewed ROWS_K0="${ROWS_K0:-3 5}" ROWS_REPEATS=3 RESULTS_DIR="$RESULTS_DIR/after" \
    bash scripts/gpu/moe_floor_rows.sh | grep -A 12 "MoE only"
fi
echo "ship_call: after $((SECONDS - start)) s"
