#!/usr/bin/env bash
# GPU part "tune_rows_call" (issue 20, one call, <= DEADLINE_S): with RUN_TESTS=1 first the MoE
# GPU tests (tests/test_moe_gpu.py, tests/test_moe_tuned.py: after a kernel change); then
# `oea-trt bench tune --install` for the 30B layer (routed timing, default objective and rounds)
# -> tune/; the issue's rows, skewed routing, with the configs just installed -> after/;
# tests/test_moe_tuned.py; then, if time is left, the same rows with the config file at
# BEFORE_FILE (e.g. a copy of the file shipped before) -> before/ (same machine; the box's copy of
# the package file is left at it). ROWS_ROUTING, ROWS_K0, ROWS_REPEATS narrow the rows
# (moe_floor_rows.sh; here skewed, "3 5", 3 by default). This replaced routed_tune_rows.sh.
# TESTS_K narrows RUN_TESTS's tests (a pytest -k expression).
#   RESULTS_DIR=/tmp/r [RUN_TESTS=1 TESTS_K="handoff" DEADLINE_S=540 TUNE_S=150 BEFORE_FILE=path.json] \
#     bash scripts/gpu/tune_rows_call.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR/tune"
start=$SECONDS
deadline=${DEADLINE_S:-540}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$RESULTS_DIR/gpu.txt"
if [ -n "${RUN_TESTS:-}" ]; then
  timeout 220 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py tests/test_moe_tuned.py \
    ${TESTS_K:+-k "$TESTS_K"} > "$RESULTS_DIR/gpu_tests.log" 2>&1
  echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 3 "$RESULTS_DIR/gpu_tests.log"
fi
tune_s=${TUNE_S:-150}
timeout $((tune_s + 60)) python3 -m oea_trt.cli bench tune --output-dir "$RESULTS_DIR/tune" --install \
  --time-budget "$tune_s" --preset qwen3-30b-a3b --batch 1 2 4 8 16 32 64 > "$RESULTS_DIR/tune/tune.log" 2>&1
echo "tune: rc=$? after $((SECONDS - start)) s"; grep -v "^    " "$RESULTS_DIR/tune/tune.log" | tail -n 12
rows() {  # rows <dir> <seconds>
  FLOOR_BUDGET=$2 ROWS_ROUTING="${ROWS_ROUTING:-skewed}" ROWS_K0="${ROWS_K0:-3 5}" ROWS_REPEATS="${ROWS_REPEATS:-3}" \
    RESULTS_DIR="$RESULTS_DIR/$1" \
    bash scripts/gpu/moe_floor_rows.sh | grep -A 12 "MoE only"
  echo "rows $1: after $((SECONDS - start)) s"
}
rows after $(( deadline - (SECONDS - start) > 150 ? 150 : deadline - (SECONDS - start) ))
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_moe_tuned.py 2>&1 | tail -n 2
left=$(( deadline - (SECONDS - start) ))
if [ -n "${BEFORE_FILE:-}" ] && [ "$left" -gt 80 ]; then
  installed=$(python3 -c "import torch; from oea_trt.moe.tuned import TUNED_DIR, config_path, cuda_device_name; \
print(config_path(cuda_device_name(0), 128, 2048, 768, 8, torch.bfloat16, root=TUNED_DIR))")  # this GPU's 30B file
  cp "$BEFORE_FILE" "$installed"
  rows before "$left"
fi
echo "tune_rows_call: after $((SECONDS - start)) s"
