#!/usr/bin/env bash
# GPU part "moe_ncu" (issue 20, ~2-3 min): where B=32-64 spends its time, per kernel, with ncu:
# duration, DRAM and SM throughput, occupancy and warp stalls of each kernel of one 30B MoE call
# (tuned config for this GPU), skewed routing, vanilla and k0=3, clocks not locked, L2 flushed
# before each kernel (the benchmark rotates weights past L2 too). Then per-kernel durations
# without ncu (scripts/gpu/moe_kernel_times.py; NO_KERNEL_TIMES=1 skips them).
#   RESULTS_DIR=/tmp/r [NCU_BATCHES="32 64"] bash scripts/gpu/moe_ncu.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT_DIR="${RESULTS_DIR:-./out}/moe_ncu"
mkdir -p "$OUT_DIR"
for B in ${NCU_BATCHES:-32 64}; do
  for K0 in 8 3; do
    # skip the first 2 calls' kernels (compile and warm-up), profile the next 2 calls' kernels
    timeout 75 ncu --kernel-name regex:"gate_up|down_kernel|combine|one_launch" --launch-skip 6 --launch-count 6 \
      --clock-control none --cache-control all --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --csv --page details \
      python3 scripts/gpu/moe_ncu_driver.py --batch "$B" --k0 "$K0" > "$OUT_DIR/ncu_B${B}_k0${K0}.csv" 2> "$OUT_DIR/ncu_B${B}_k0${K0}.err"
    echo "ncu B=$B k0=$K0: rc=$?"; grep "^B=" "$OUT_DIR/ncu_B${B}_k0${K0}.csv" | head -1
  done
  if [ -z "${NO_KERNEL_TIMES:-}" ]; then
    timeout 45 python3 scripts/gpu/moe_kernel_times.py --batch "$B" > "$OUT_DIR/kernel_times_B$B.txt" 2>&1
    cat "$OUT_DIR/kernel_times_B$B.txt"
  fi
  python3 scripts/gpu/ncu_table.py "$OUT_DIR"/ncu_B${B}_k0*.csv
done
