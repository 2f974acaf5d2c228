#!/usr/bin/env bash
# GPU part "sweep_call" (issue 20, one call, ~8 min): the GPU tests of the kernel variants and
# the preloaded down tiles, then scripts/gpu/tile_sweep.py (candidates against the
# shipped config, side by side).
#   RESULTS_DIR=/tmp/r [SWEEP_BATCHES="1 2 4 8 16 32 64" SWEEP_S=380] bash scripts/gpu/sweep_call.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$RESULTS_DIR/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py -k "variants or preload or handoff or graph_replay" \
  > "$RESULTS_DIR/gpu_tests.log" 2>&1
echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 3 "$RESULTS_DIR/gpu_tests.log"
timeout $(( ${SWEEP_S:-380} + 90 )) python3 scripts/gpu/tile_sweep.py --batch ${SWEEP_BATCHES:-1 2 4 8 16 32 64} \
  --budget "${SWEEP_S:-380}" --json "$RESULTS_DIR/tile_sweep.json" 2>&1 | grep -v "Warning\|warn" | tee "$RESULTS_DIR/tile_sweep.txt"
echo "sweep: after $((SECONDS - start)) s"
if [ -n "${TIMELINE_CONFIG:-}" ]; then  # the kernel timeline of one candidate (JSON KernelConfig fields)
  timeout 90 python3 scripts/gpu/moe_timeline.py --batch ${TIMELINE_BATCHES:-1 4} --config "$TIMELINE_CONFIG" \
    --json "$RESULTS_DIR/timeline_candidate.json" 2>&1 | grep -v "Warning\|warn" | tee "$RESULTS_DIR/timeline_candidate.txt"
fi
