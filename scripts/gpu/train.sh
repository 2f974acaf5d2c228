#!/usr/bin/env bash
# GPU part "train": train the embedded Qwen3-MoE LM (scripts/train_embedded.py) within a time
# budget, then evaluate it with `oea-trt eval` (on 2 CPU cores like CI, and on the GPU), dump
# router traces for the MoE benchmark, and run the CUDA tests of oea_trt.integrations.hf.
# Results: $RESULTS_DIR/train/ (model/, TRAINING.md, training_log.csv, loss_curve.png,
# expert_usage.png, training.json, eval/, eval_cuda/, *.log). The lead copies
# model/* TRAINING.md loss_curve.png training_log.csv expert_usage.png training.json into
# oea_trt/models/embedded/.
# Expected time: ~3.5 min training (budget 200 s from the trainer's start, startup included)
# + ~1 min CPU eval + ~1 min GPU eval and tests (about 5.5 min in all).
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT="$RESULTS_DIR/train"
mkdir -p "$OUT"
TRAIN_BUDGET="${TRAIN_BUDGET:-200}"
TRAIN_ARGS="${TRAIN_ARGS:-}"   # extra trainer flags, e.g. for a CPU smoke test: --tiny --steps 3
failed=""

step() {  # step NAME LOGFILE CMD...: run, log, keep going on failure
  local name=$1 log=$2
  shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" > "$log" 2>&1
  local rc=$?
  tail -n 25 "$log"
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || failed="$failed $name"
}

python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

step train "$OUT/train.log" python3 scripts/train_embedded.py --out "$OUT" --time-budget "$TRAIN_BUDGET" $TRAIN_ARGS

if [ -f "$OUT/model/model.safetensors" ]; then
  # What CI and the README run: the default eval on 2 CPU cores, GPU hidden.
  CPU_PIN=""
  command -v taskset > /dev/null && CPU_PIN="taskset -c 0,1"
  step eval-cpu "$OUT/eval_cpu.log" env CUDA_VISIBLE_DEVICES= $CPU_PIN python3 -m oea_trt.cli eval \
    --model "$OUT/model" --device cpu --output-dir "$OUT/eval" --dump-traces "$OUT/eval/embedded_traces.pt"
  step eval-cuda "$OUT/eval_cuda.log" python3 -m oea_trt.cli eval --model "$OUT/model" --device cuda \
    --batch 16 --k0 2 4 --quiet --output-dir "$OUT/eval_cuda"
fi
step tests-gpu "$OUT/tests_gpu.log" python3 -m pytest -q tests/test_hf_gpu.py tests/test_hf_patch.py

echo "=== train summary"
[ -f "$OUT/training.json" ] && python3 -c "
import json; s = json.load(open('$OUT/training.json'))
print('steps', s['steps'], 'ms/step', s['ms_per_step'], 'final train CE', round(s['final_train_loss'], 4),
      'held-out CE', round(s['final_eval_loss'], 4), 'weights MB', round(s['weights_bytes'] / 1e6, 1), 'wall s', s['wall_seconds'])"
[ -f "$OUT/eval/eval_results.json" ] && python3 -c "
import json; r = json.load(open('$OUT/eval/eval_results.json'))
w = r['oea_beats_pruning']; print('eval (CPU pinned to 2 cores, 1 thread):', r['seconds'], 's; OEA below pruning at', sum(w.values()), 'of', len(w), '(B, k0)')"
if [ -n "$failed" ]; then echo "FAILED steps:$failed"; exit 1; fi
echo "all steps passed"
