#!/usr/bin/env bash
# GPU part "small_t_call" (issue 20, one call, ~7 min), by card:
#  - H200: the MoE GPU tests of the hand-off and preload, then the 30B re-tune and the issue's rows
#    before/after (scripts/gpu/tune_rows_call.sh; the H200 file predates both options);
#  - otherwise (H100): the hand-off and preload GPU tests, tile_sweep.py's plan, then the kernel
#    timeline at B=4 of the shipped config with and without the hand-off. (Ran at dfa1c6b with
#    the pause between polls and the partial preload, both since removed:
#    benchmarks/results/hand_off_pause_h100/.)
#   RESULTS_DIR=/tmp/r bash scripts/gpu/small_t_call.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
R="${RESULTS_DIR:-./out}"
mkdir -p "$R"
start=$SECONDS
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "$name" | tee "$R/gpu.txt"
if echo "$name" | grep -q H200; then
  cp oea_trt/moe/tuned_configs/NVIDIA_H200/E128_H2048_I768_k8_bfloat16.json /tmp/before_h200.json
  RESULTS_DIR="$R" RUN_TESTS=1 TESTS_K="handoff or preload or graph_replay or back_to_back" DEADLINE_S=430 \
    TUNE_S=110 BEFORE_FILE=/tmp/before_h200.json bash scripts/gpu/tune_rows_call.sh 2>&1 | grep -v -i warn
  exit 0
fi
timeout 110 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py -k "handoff or back_to_back or preload" \
  > "$R/gpu_tests.log" 2>&1
echo "tests: rc=$? after $((SECONDS - start)) s"; tail -n 2 "$R/gpu_tests.log"
timeout 270 python3 scripts/gpu/tile_sweep.py --batch 4 8 2 --budget 190 --json "$R/tile_sweep.json" 2>&1 \
  | grep -v -i "warn" | tee "$R/tile_sweep.txt"
echo "sweep: after $((SECONDS - start)) s"
B4='{"down": "slots", "gu_block_n": 32, "gu_block_k": 128, "gu_stages": 4, "dn_block_n": 64, "dn_block_k": 128, "dn_stages": 3, "combine_block_h": 256'
for handoff in true false; do
  timeout 40 python3 scripts/gpu/moe_timeline.py --batch 4 --config "$B4, \"handoff\": $handoff}" \
    --json "$R/timeline_handoff_$handoff.json" 2>&1 | grep -v -i warn | tee "$R/timeline_handoff_$handoff.txt"
done
echo "small_t_call: after $((SECONDS - start)) s"
