#!/usr/bin/env bash
# GPU part "where_time_goes" (issue 20, one call, ~7 min): the MoE GPU tests on this tree, then
# where a 30B routing+MoE call spends its time at small T (B=1, 4) and with more tokens per
# expert (B=32, 64): the kernel timeline of graph-replayed calls (scripts/gpu/moe_timeline.py,
# also B=16), then ncu of each MoE kernel (scripts/gpu/moe_ncu.sh).
#   RESULTS_DIR=/tmp/r [TIMELINE_BATCHES="1 4 16 32 64" NCU_BATCHES="1 4 32 64"] bash scripts/gpu/where_time_goes.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
mkdir -p "$RESULTS_DIR"
start=$SECONDS
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee "$RESULTS_DIR/gpu.txt"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py tests/test_moe_tuned.py \
    > "$RESULTS_DIR/gpu_tests.log" 2>&1
  echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 2 "$RESULTS_DIR/gpu_tests.log"
fi
timeout 150 python3 scripts/gpu/moe_timeline.py --batch ${TIMELINE_BATCHES:-1 4 16 32 64} \
  --json "$RESULTS_DIR/timeline.json" > "$RESULTS_DIR/timeline.txt" 2>&1
echo "timeline: rc=$? after $((SECONDS - start)) s"; cat "$RESULTS_DIR/timeline.txt" | grep -v Warning
NCU_BATCHES="${NCU_BATCHES:-1 4 32 64}" RESULTS_DIR="$RESULTS_DIR" NO_KERNEL_TIMES=1 bash scripts/gpu/moe_ncu.sh
echo "ncu: after $((SECONDS - start)) s"
