#!/usr/bin/env bash
# MoE launch-structure A/B on the GPU box (benchmarks/moe_ab.py): the Triton kernel's 3-launch
# path vs its one-launch path (tiles, with and without starting on the routing's published
# active set), on qwen3-30b-a3b (skewed B=16 vanilla and k0=3, uniform B=16 vanilla);
# routing+MoE and MoE-only CUDA-graph replay. The GPU tests of those variants run first.
#   bash scripts/gpu/moe_ab.sh        (from anywhere; RESULTS_DIR defaults to ./out)
# Writes $RESULTS_DIR/moe_ab/: compile.log, pytest.log, routing_kernel.log, ab.log, results.json,
# report.md. Budget <= 9 min on an H200: sm_90 compile check (<= 150 s), the GPU tests (<= 200 s),
# the routing kernel's library (cached when the kernel or moe part built it in this session; else
# an nvcc build, capped at 120 s, after which routing falls back to the torch reference and the
# report says so), then the A/B, which starts no new case after 240 s (hard cap 300 s).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe_ab"
mkdir -p "$OUT_DIR"
failed=""
start=$SECONDS

# MOE_AB_QUICK=1: the A/B only (no compile check, GPU tests or timeline), for a second call.
# MOE_AB_COMPILE=0: skip only the compile check (the CPU suite runs it too).
# MOE_AB_ROUTING_TESTS=1: also tests/test_kernel_gpu.py (after a change to the routing kernel).
QUICK="${MOE_AB_QUICK:-0}"
if [ "$QUICK" != 1 ]; then
if [ "${MOE_AB_COMPILE:-1}" != 0 ]; then
echo "== moe_ab: sm_90 compile check of the triton kernels ($(date +%T))"
timeout 150 python3 scripts/check_moe_kernels.py --preset qwen3-30b-a3b --batch 16 64 --kernel three_launch one_launch \
  > "$OUT_DIR/compile.log" 2>&1
rc=$?
tail -n 3 "$OUT_DIR/compile.log"
[ $rc -eq 0 ] || failed="$failed compile-check(rc=$rc)"
fi

fi

# Built before the tests: the routing -> one-launch tests (early_active) need it.
echo "== moe_ab: routing kernel library ($(date +%T))"
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 120

if [ "$QUICK" != 1 ]; then
echo "== moe_ab: GPU tests of the variants timed here ($(date +%T))"
# The one-launch path first: a lost hand-off would hang, hence the timeout.
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py \
  -k "one_launch or early_active or deterministic or variants or pdl_graph_replay or default_is" \
  > "$OUT_DIR/pytest.log" 2>&1
rc=$?
tail -n 15 "$OUT_DIR/pytest.log"
[ $rc -eq 0 ] || failed="$failed gpu-tests(rc=$rc)"
if [ "${MOE_AB_ROUTING_TESTS:-0}" = 1 ]; then  # after a routing-kernel change: its own GPU tests too
  echo "== moe_ab: routing kernel GPU tests ($(date +%T))"
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernel_gpu.py > "$OUT_DIR/pytest_routing.log" 2>&1
  rc=$?
  tail -n 8 "$OUT_DIR/pytest_routing.log"
  [ $rc -eq 0 ] || failed="$failed routing-gpu-tests(rc=$rc)"
fi
fi


echo "== moe_ab: A/B ($(date +%T), $((SECONDS - start)) s in)"
timeout 300 python3 benchmarks/moe_ab.py --out "$OUT_DIR" --time-budget 240 2>&1 | tee "$OUT_DIR/ab.log"
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] || failed="$failed ab(rc=$rc)"

echo "== moe_ab: done after $((SECONDS - start)) s"
ls -la "$OUT_DIR"
if [ -n "$failed" ]; then
  echo "moe_ab: FAILED steps:$failed"
  exit 1
fi
echo "moe_ab: all steps passed"
