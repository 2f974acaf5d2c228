#!/usr/bin/env bash
# GPU part "moe_small_t" (issue 20, ~8 min): the MoE determinism GPU tests, then
# benchmarks/moe_ab.py --variants small_t on the 30B layer, skewed routing, B 1 2 4 8 16 32 64,
# vanilla and k0=3: shipped config vs narrow one-launch tiles, with the routing-only and
# nothing-active phase rows and per-kernel timelines at B 1, 16, 64.
#   RESULTS_DIR=/tmp/r [SMALL_T_BUDGET=580 SMALL_T_BATCHES="1 4 16 64"] bash scripts/gpu/moe_small_t.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe_small_t"
mkdir -p "$OUT_DIR"
start=$SECONDS
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py -k "deterministic" \
  > "$OUT_DIR/moe_tests.log" 2>&1
echo "moe tests: rc=$? after $((SECONDS - start)) s"; tail -n 3 "$OUT_DIR/moe_tests.log"
left=$(( ${SMALL_T_BUDGET:-580} - (SECONDS - start) ))
timeout "$left" python3 benchmarks/moe_ab.py --out "$OUT_DIR" --variants small_t --modes skewed \
  --batches ${SMALL_T_BATCHES:-1 2 4 8 16 32 64} --k0 3 --time-budget $((left - 60)) 2>&1 | tee "$OUT_DIR/ab.log" | grep -v "^  " | tail -n 5
echo "moe_ab: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
cat "$OUT_DIR/report.md" 2>/dev/null | head -n 60
