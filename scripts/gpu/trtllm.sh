#!/usr/bin/env bash
# GPU part "trtllm": the TensorRT-LLM integration's GPU-checkable pieces (the GPU box has no
# TensorRT / TensorRT-LLM, so engines cannot be built or run here; tests/test_trtllm_engine.py
# skips with its reason and is listed in the summary):
#   1. PyTorch-backend routing call (oea_trt.integrations.trtllm_torch.settings.route_packed_batch) with the
#      kernel's oea_trt.routing.dispatch.route on CUDA: equal to the CPU reference, captured and
#      replayed in a CUDA graph;
#   2. the runtime tests (CPU-pinned, as in CI) and the TensorRT-LLM-only tests (expect skips);
#   3. the pure-PyTorch runtime on CUDA: tiny random Qwen3-MoE, OEA k0=1 vs vanilla, distinct
#      experts per step and outputs, as JSON.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/trtllm.sh     (from the repository root; ~1-2 minutes)
# Writes $RESULTS_DIR/trtllm/: one log per step, junit XML, fallback_cuda.json, summary.txt.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/trtllm"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
status=0

step() {  # step NAME COMMAND...: run, log to $OUT_DIR/NAME.log, record the outcome, go on
  local name="$1"; shift
  local start=$SECONDS
  echo "=== $name: $*"
  timeout 600 "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 20 "$OUT_DIR/$name.log"
  echo "$name: rc=$rc ($((SECONDS - start)) s)" | tee -a "$SUMMARY"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

step torch_backend_route python3 -m pytest -q -rs tests/test_trtllm_torch_settings.py \
  --junitxml="$OUT_DIR/torch_backend_route.xml"
step runtime_and_trtllm_tests python3 -m pytest -q -rs tests/test_runtime_fallback.py tests/test_trtllm_engine.py \
  tests/test_trtllm_symbols.py --junitxml="$OUT_DIR/runtime_and_trtllm_tests.xml"
step fallback_cuda python3 examples/generate.py --tiny /tmp/oea-trtllm-tiny --device cuda --k0 1 \
  --compare-vanilla --max-new-tokens 16 --json "$OUT_DIR/fallback_cuda.json"

# Which routing implementation ran on CUDA (the kernel, or the reference when it did not load).
python3 - >> "$SUMMARY" 2>&1 <<'PY'
from oea_trt.routing import dispatch
ok = dispatch.kernel_available()
print("dispatch kernel available:", ok, "" if ok else f"({dispatch._kernel_problem})")
PY
grep -h "skipped\|passed\|failed" "$OUT_DIR"/*.log | tail -n 5 >> "$SUMMARY"
echo "--- trtllm summary"; cat "$SUMMARY"
exit $status
