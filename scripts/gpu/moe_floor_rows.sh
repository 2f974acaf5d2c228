#!/usr/bin/env bash
# GPU part "moe_floor_rows" (issue 20, ~9 min): the rows issue 20 asks for, with the configs the
# package ships for this GPU: `oea-trt bench moe`, 30B layer, B 1 2 4 8 16 32 64, vanilla and
# k0 3 and 5, skewed and the embedded model's recorded routing, our kernel only. The report's
# "MoE only us (x floor)" tables are the issue's form. Run it after the tuned configs change.
#   RESULTS_DIR=/tmp/r [FLOOR_BUDGET=520 ROWS_ROUTING="skewed trace" ROWS_K0="3 5" ROWS_REPEATS=5] \
#     bash scripts/gpu/moe_floor_rows.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe_floor_rows"
mkdir -p "$OUT_DIR"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
left=$(( ${FLOOR_BUDGET:-520} - (SECONDS - start) ))
timeout "$left" python3 -m oea_trt.cli bench moe --out "$OUT_DIR" --preset qwen3-30b-a3b --impl triton \
  --routing ${ROWS_ROUTING:-skewed trace} --batch 1 2 4 8 16 32 64 --k0 ${ROWS_K0:-3 5} --repeats ${ROWS_REPEATS:-5} \
  --time-budget $(( left > 120 ? left - 60 : left * 2 / 3 )) \
  2>&1 | tee "$OUT_DIR/bench.log" | tail -n 5
echo "bench moe: rc=${PIPESTATUS[0]} after $((SECONDS - start)) s"
grep -A 12 "x floor" "$OUT_DIR/report.md" 2>/dev/null | head -n 40
