#!/usr/bin/env bash
# GPU part "plugin": build the OeaRouting TensorRT plugin against the carried TensorRT headers
# and check its enqueue against the Python reference on the GPU, without TensorRT itself
# (tests/plugin_harness.py dlopens the library and calls getCreators/createPlugin/enqueue).
#   RESULTS_DIR=/tmp/r bash scripts/gpu/plugin.sh     (from the repository root; ~1-2 minutes)
# Headers: $TensorRT_INCLUDE_DIR, else ./.trt/include (git-ignored; the lead copies v10.14 there).
# Writes $RESULTS_DIR/plugin/: build.log, pytest logs, junit XML, weight errors, summary.txt.
# Warnings are counted, not fatal here (the box's compiler may differ; check_plugin.sh uses -Werror).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/plugin"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
INCLUDE_DIR="${TensorRT_INCLUDE_DIR:-$PWD/.trt/include}"
BUILD_DIR="${OEA_TRT_PLUGIN_BUILD_DIR:-$PWD/build/trt-plugin-gpu}"
ARCHS="${OEA_TRT_CUDA_ARCHS:-90}"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
status=0

step() {  # step NAME COMMAND...: run, log to $OUT_DIR/NAME.log, record the outcome, go on
  local name="$1"; shift
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  echo "$name: rc=$rc ($((SECONDS - start)) s)" | tee -a "$SUMMARY"
  [ $rc -eq 0 ] || [ -n "${INFORMATIONAL:-}" ] || status=1
  return $rc
}

{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nvcc --version | tail -1;
  grep -E "define TRT_(MAJOR|MINOR|PATCH)_ENTERPRISE" "$INCLUDE_DIR/NvInferVersion.h"; } > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"

if [ ! -f "$INCLUDE_DIR/NvInferRuntime.h" ]; then
  echo "plugin: no TensorRT headers at $INCLUDE_DIR (set TensorRT_INCLUDE_DIR or copy them to .trt/include)" | tee -a "$SUMMARY"
  exit 1
fi
if [ ! -f CMakeLists.txt ]; then
  echo "plugin: no top-level CMakeLists.txt (the kernel library's build) in this checkout" | tee -a "$SUMMARY"
  exit 1
fi

GENERATOR=()
command -v ninja > /dev/null && GENERATOR=(-G Ninja)
if step build bash -c "cmake -S . -B '$BUILD_DIR' ${GENERATOR[*]} -DCMAKE_BUILD_TYPE=Release \
      -DTensorRT_INCLUDE_DIR='$INCLUDE_DIR' -DCMAKE_CUDA_ARCHITECTURES='$ARCHS' -DOEA_TRT_WERROR=OFF -DOEA_BUILD_HARNESS=ON \
    && cmake --build '$BUILD_DIR' -j \$(nproc) --target oea_routing_trt oea_routing_trt_preload oea_plugin_harness"; then
  export OEA_TRT_PLUGIN_LIB="$BUILD_DIR/lib/liboea_routing_trt.so"
  export OEA_TRT_PLUGIN_RESULTS="$OUT_DIR/weight_errors.json"
  grep -ci "warning:" "$OUT_DIR/build.log" | sed 's/^/build warnings: /' | tee -a "$SUMMARY"
  step gpu_tests timeout 150 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_plugin_gpu.py tests/test_plugin_harness_cpu.py --junitxml="$OUT_DIR/junit.xml"
  # Out-of-bounds / race check of the same enqueue path on a small subset (informational).
  if command -v compute-sanitizer > /dev/null; then
    INFORMATIONAL=1 step sanitizer timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 \
      python3 -m pytest -q -p no:cacheprovider tests/test_plugin_gpu.py -k "qwen3-30b and 64 and float16 or graph or non_finite"
  fi
fi
grep -hE "passed|failed|error" "$OUT_DIR"/gpu_tests.log 2>/dev/null | tail -n 1 | sed 's/^/gpu_tests: /' >> "$SUMMARY"
echo "=== plugin summary"
cat "$SUMMARY"
exit $status
