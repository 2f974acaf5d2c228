#!/usr/bin/env bash
# Build the OeaRouting TensorRT plugin and run its CPU tests (docs/plugin.md).
#   scripts/check_plugin.sh [--no-install] TENSORRT_INCLUDE_DIR [MORE_INCLUDE_DIRS...]
# e.g. scripts/check_plugin.sh /path/TensorRT-10.14/include /path/TensorRT-11.1/include
#
# 1. For every include dir: configure and build with -Wall -Wextra -Werror (OEA_TRT_WERROR) and
#    the test harness (OEA_BUILD_HARNESS) into build/check-plugin-<version>/ (a warning fails the build).
# 2. Install TensorRT's lean runtime from PyPI if missing (tensorrt-lean-cu13-libs/-bindings
#    10.16.1.11; --no-install skips that and the lean tests then skip).
# 3. With the FIRST dir's build (use a 10.x one: the lean runtime is 10.16 and a plugin only
#    loads into the TensorRT major version it was built for), run tests/test_plugin_*.py:
#    field table, lean registry, C++ harness; GPU / full-TensorRT tests skip without them.
set -u
cd "$(dirname "$0")/.."
install=1
if [ "${1:-}" = "--no-install" ]; then install=0; shift; fi
if [ $# -lt 1 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
for dir in "$@"; do
  if [ ! -f "$dir/NvInferRuntime.h" ]; then
    echo "check_plugin: $dir has no NvInferRuntime.h; pass TensorRT's include directory" >&2
    exit 2
  fi
done
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
GENERATOR=()
command -v ninja > /dev/null && GENERATOR=(-G Ninja)
ARCHS=()  # the top-level CMakeLists.txt picks the CUDA architectures unless OEA_TRT_CUDA_ARCHS says
[ -n "${OEA_TRT_CUDA_ARCHS:-}" ] && ARCHS=(-DCMAKE_CUDA_ARCHITECTURES="$OEA_TRT_CUDA_ARCHS")
failed=0
first_lib=""
for dir in "$@"; do
  version=$(grep -E "^#define TRT_(MAJOR|MINOR)_ENTERPRISE" "$dir/NvInferVersion.h" | awk '{print $3}' | paste -sd.)
  build="build/check-plugin-${version:-unknown}"
  echo "=== TensorRT ${version} headers ($dir) -> $build"
  if cmake -S . -B "$build" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DTensorRT_INCLUDE_DIR="$dir" \
       -DOEA_TRT_WERROR=ON -DOEA_BUILD_HARNESS=ON "${ARCHS[@]}" > "$build.configure.log" 2>&1 \
     && cmake --build "$build" -j "$(nproc)" --verbose \
          --target oea_routing_trt oea_routing_trt_preload oea_plugin_harness > "$build.build.log" 2>&1; then
    warnings=$(grep -ci "warning:" "$build.build.log")
    echo "built with -Wall -Wextra -Werror: $warnings warning line(s); libraries in $build/lib"
    grep -m1 -E "oea_routing_plugin.cpp" "$build.build.log" | sed 's/^/  e.g. /'
    [ -n "$first_lib" ] || first_lib="$PWD/$build/lib/liboea_routing_trt.so"
  else
    echo "BUILD FAILED: see $build.configure.log and $build.build.log"
    tail -n 30 "$build.build.log" 2>/dev/null || tail -n 30 "$build.configure.log"
    failed=1
  fi
done
[ -n "$first_lib" ] || { echo "check_plugin: no build succeeded"; exit 1; }

if ! python3 -c "import tensorrt_lean_bindings" 2> /dev/null; then
  if [ $install -eq 1 ]; then
    echo "=== installing TensorRT's lean runtime (CPU-loadable plugin registry) from PyPI"
    python3 -m pip install --quiet tensorrt-lean-cu13-libs==10.16.1.11 tensorrt-lean-cu13-bindings==10.16.1.11 \
      || echo "check_plugin: could not install the lean runtime: the registry tests will skip"
  else
    echo "check_plugin: tensorrt_lean_bindings missing (--no-install): the registry tests will skip"
  fi
fi

echo "=== tests with $first_lib"
OEA_TRT_PLUGIN_LIB="$first_lib" python3 -m pytest -q -rs tests/test_plugin_fields.py tests/test_plugin_lean.py \
  tests/test_plugin_harness_cpu.py tests/test_plugin_gpu.py tests/test_plugin_tensorrt.py || failed=1
exit $failed
