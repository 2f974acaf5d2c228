#!/usr/bin/env bash
# GPU call for issue 20, session 17 (one H100, ~4 min): read_floor.cu's probes 2-4 and 7-9 at 4, 2
# and 1 CTAs per SM beside the shipped kernel, then tile_sweep.py's plan (one-stage tiles).
#   RESULTS_DIR=/tmp/r bash scripts/gpu/probe_call.sh
set -u
cd "$(dirname "$0")/../.."
R="${RESULTS_DIR:-./out}"
mkdir -p "$R/probes" "$R/sweep"
start=$SECONDS
RESULTS_DIR="$R/probes" BUDGET_S=100 TIMEOUT_S=170 bash scripts/gpu/moe_stream/call.sh --batch 4 1 16 --cases 4 \
  --read-floor --read-probes 2 3 4 7 8 9 --probe-ctas-per-sm 4 2 1 --variants 6:4:1
echo "probes: after $((SECONDS - start)) s"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
timeout 150 python3 scripts/gpu/tile_sweep.py --batch ${SWEEP_BATCHES:-4 1 8} --budget 90 \
  --json "$R/sweep/tile_sweep.json" 2>&1 | grep -v "Warning\|warn" | tee "$R/sweep/tile_sweep.txt"
echo "sweep: after $((SECONDS - start)) s"
