#!/usr/bin/env bash
# GPU part "moe_sliced" (issue 20, ~9 min): the sliced kernel's GPU tests, then
# benchmarks/moe_ab.py --variants sliced on the 30B layer, skewed routing, vanilla and k0=3:
# the shipped config against the sliced kernel's tiles.
#   RESULTS_DIR=/tmp/r [SLICED_BUDGET=560 SLICED_BATCHES="1 4 16" SLICED_TESTS=1] bash scripts/gpu/moe_sliced.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe_sliced"
mkdir -p "$OUT_DIR"
start=$SECONDS
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
if [ "${SLICED_TESTS:-1}" = 1 ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_moe_sliced_gpu.py > "$OUT_DIR/sliced_tests.log" 2>&1
  echo "sliced GPU tests: rc=$? after $((SECONDS - start)) s"; tail -n 15 "$OUT_DIR/sliced_tests.log"
fi
left=$(( ${SLICED_BUDGET:-560} - (SECONDS - start) ))
timeout "$left" python3 benchmarks/moe_ab.py --out "$OUT_DIR" --variants sliced --modes skewed --no-timeline \
  --batches ${SLICED_BATCHES:-1 4 16} --k0 ${SLICED_K0:-3} --repeats ${SLICED_REPEATS:-3} \
  --time-budget $((left - 45)) 2>&1 | tee "$OUT_DIR/ab.log" | grep -v "^  " | tail -n 5
echo "moe_ab: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
cat "$OUT_DIR/report.md" 2>/dev/null | head -n 80
