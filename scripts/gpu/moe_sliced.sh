#!/usr/bin/env bash
# GPU part "moe_sliced" (issue 20, ~9.5 min): the sliced kernel's GPU tests and the one-launch
# kernel's (sync.py moved their shared waits), then benchmarks/moe_ab.py --variants sliced on the
# 30B layer, skewed routing, vanilla and k0=3 (the shipped config against the sliced kernel's
# tiles), then per-item timestamps of single calls (scripts/gpu/sliced_trace.py).
#   RESULTS_DIR=/tmp/r [SLICED_BUDGET=560 SLICED_BATCHES="1 4 16" SLICED_K0=3 SLICED_TESTS=1 SLICED_TRACE=1] \
#     bash scripts/gpu/moe_sliced.sh
# Second call on the same warm machine: SLICED_TESTS=0 SLICED_TRACE=0 SLICED_BATCHES="2 8 32 64".
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe_sliced"
mkdir -p "$OUT_DIR"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
if [ "${SLICED_TESTS:-1}" = 1 ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_moe_sliced_gpu.py tests/test_moe_gpu.py \
    -k "sliced or one_launch or early_active or deterministic" > "$OUT_DIR/tests.log" 2>&1
  echo "GPU tests: rc=$? after $((SECONDS - start)) s"; tail -n 15 "$OUT_DIR/tests.log"
fi
trace_s=0
[ "${SLICED_TRACE:-1}" = 1 ] && trace_s=90
left=$(( ${SLICED_BUDGET:-560} - (SECONDS - start) - trace_s ))
timeout "$left" python3 benchmarks/moe_ab.py --out "$OUT_DIR" --variants sliced --modes skewed --no-timeline \
  --batches ${SLICED_BATCHES:-1 4 16} --k0 ${SLICED_K0:-3} --repeats ${SLICED_REPEATS:-3} \
  --time-budget $((left - 45)) 2>&1 | tee "$OUT_DIR/ab.log" | grep -v "^  " | tail -n 5
echo "moe_ab: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
cat "$OUT_DIR/report.md" 2>/dev/null | head -n 80
if [ "$trace_s" -gt 0 ]; then
  timeout "$trace_s" python3 scripts/gpu/sliced_trace.py --out "$OUT_DIR/trace" --batches 1 4 16 --k0 3 \
    > "$OUT_DIR/trace.log" 2>&1
  echo "trace: rc=$? after $((SECONDS - start)) s"; cut -c1-400 "$OUT_DIR/trace.log" | tail -n 12
fi
