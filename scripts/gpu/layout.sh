#!/usr/bin/env bash
# GPU part "layout": everything the package re-layout must show on the GPU, in one device call.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/layout.sh      (from the repo root; ~8 min on an H100)
# 1. the routing library (CMake build, cached), then in parallel (correctness only, no timing):
#    routing-kernel GPU tests, MoE GPU tests, the TensorRT plugin harness (needs .trt/include),
#    the installed-package check (pip install into a venv, used from /tmp), the decode GPU tests;
# 2. alone on the GPU: benchmarks/layout_ab.py, the 30B layer at B=16 (skewed, vanilla and k0=3)
#    timed with the tree before the re-layout (./.old: `git archive 430a95c oea_trt plugin`)
#    and this tree, alternating fresh processes.
# Writes $RESULTS_DIR/layout/: one log per step, layout_ab.json, summary.txt.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/layout"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$SUMMARY"
echo "commit $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) dirty" | tee -a "$SUMMARY"
start=$SECONDS

bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_library.log" 150
echo "routing library: rc=$? after $((SECONDS - start)) s" | tee -a "$SUMMARY"

pids=()
( timeout ${LAYOUT_TEST_CAP:-300} python3 -m pytest -q -p no:cacheprovider tests/test_kernel_gpu.py tests/test_routing_gpu.py \
    > "$OUT_DIR/kernel_tests.log" 2>&1; echo "kernel GPU tests: rc=$? $(tail -n 1 "$OUT_DIR/kernel_tests.log")" >> "$SUMMARY" ) &
pids+=($!)
( timeout ${LAYOUT_TEST_CAP:-300} python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py tests/test_moe_tuned.py \
    > "$OUT_DIR/moe_tests.log" 2>&1; echo "MoE GPU tests: rc=$? $(tail -n 1 "$OUT_DIR/moe_tests.log")" >> "$SUMMARY" ) &
pids+=($!)
( RESULTS_DIR="$OUT_DIR" timeout ${LAYOUT_TEST_CAP:-300} bash scripts/gpu/plugin.sh > "$OUT_DIR/plugin.log" 2>&1
  echo "plugin: rc=$? $(grep -h gpu_tests "$OUT_DIR/plugin/summary.txt" 2>/dev/null | tail -n 1)" >> "$SUMMARY" ) &
pids+=($!)
( timeout ${LAYOUT_TEST_CAP:-300} python3 -m pytest -q -p no:cacheprovider -rs tests/test_decode_gpu.py \
    > "$OUT_DIR/decode_tests.log" 2>&1; echo "decode GPU tests: rc=$? $(tail -n 1 "$OUT_DIR/decode_tests.log")" >> "$SUMMARY" ) &
pids+=($!)
( RESULTS_DIR="$OUT_DIR" timeout ${LAYOUT_TEST_CAP:-300} bash scripts/gpu/installed_package.sh > "$OUT_DIR/installed_package.log" 2>&1
  echo "installed package: rc=$? $(tail -n 2 "$OUT_DIR/installed_package.log" | tr '\n' ' ')" >> "$SUMMARY" ) &
pids+=($!)
wait "${pids[@]}"
echo "correctness block done after $((SECONDS - start)) s" | tee -a "$SUMMARY"

if [ -d .old/oea_trt ]; then
  timeout 300 python3 benchmarks/layout_ab.py --tree before=.old --tree after=. --rounds ${LAYOUT_ROUNDS:-2} \
    --json "$OUT_DIR/layout_ab.json" > "$OUT_DIR/layout_ab.log" 2>&1
  echo "layout A/B: rc=$?" >> "$SUMMARY"
  cat "$OUT_DIR/layout_ab.log"
else
  echo "layout A/B: skipped, no .old tree" >> "$SUMMARY"
fi
# 3. With the time left (the call's limit is 10 min): tune the 30B layer's configs (the tuner checks
#    every winner against the fp32 loop before it writes it); the other presets in the next call.
left=$(( ${LAYOUT_BUDGET:-560} - (SECONDS - start) ))
if [ "$left" -gt 60 ]; then
  timeout $((left - 10)) python3 -m oea_trt.cli bench tune --install --output-dir "$OUT_DIR/tune" \
    --time-budget $((left - 40)) --preset qwen3-30b-a3b --batch 16 1 64 4 32 8 2 > "$OUT_DIR/tune.log" 2>&1
  echo "tune 30B: rc=$? after $((SECONDS - start)) s; $(grep -c '"' "$OUT_DIR"/tune/*/*.json 2>/dev/null | head -3 | tr '\n' ' ')" >> "$SUMMARY"
  tail -n 12 "$OUT_DIR/tune.log"
fi
echo "done after $((SECONDS - start)) s" >> "$SUMMARY"
cat "$SUMMARY"
