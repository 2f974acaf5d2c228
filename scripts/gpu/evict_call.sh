#!/usr/bin/env bash
# GPU call for issue 20 (one H100, ~6 min): is the weights' L2 priority the kernels' fixed cost?
# 1. GPU tests of config.w_evict_first (bit-identity, the variants against the fp32 loop);
# 2. read_floor.cu's probes 3 and 7-13 beside the shipped kernel (which load and store forms
#    keep the read at the floor);
# 3. tile_sweep.py's plan: one-stage tiles with and without the evict_first hint.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/evict_call.sh
set -u
cd "$(dirname "$0")/../.."
R="${RESULTS_DIR:-./out}"
mkdir -p "$R/probes" "$R/sweep"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$R/gpu.txt"
timeout 140 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py -k "evict_first" > "$R/gpu_tests.log" 2>&1
echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 3 "$R/gpu_tests.log"
RESULTS_DIR="$R/probes" BUDGET_S=120 TIMEOUT_S=170 bash scripts/gpu/moe_stream/call.sh --batch 4 16 1 --cases 4 \
  --read-floor --read-probes 3 7 8 9 10 11 12 13 --probe-ctas-per-sm 4 --variants 6:4:1
echo "probes: after $((SECONDS - start)) s"
timeout 180 python3 scripts/gpu/tile_sweep.py --batch ${SWEEP_BATCHES:-4 1 8 16} --budget 120 \
  --json "$R/sweep/tile_sweep.json" 2>&1 | grep -v "Warning\|warn" | tee "$R/sweep/tile_sweep.txt"
echo "sweep: after $((SECONDS - start)) s"
