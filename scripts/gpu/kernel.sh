#!/usr/bin/env bash
# GPU part "kernel": build, test, time and sanitize the fused OEA routing kernel (issue 3).
#
#   RESULTS_DIR=/tmp/oea-results bash scripts/gpu/kernel.sh     (from the repo root; ~5-6 min on an H100)
#
# Steps (each logged to $RESULTS_DIR/kernel/<step>.log; a failing step is reported, the rest run):
#   build      CMake + nvcc for sm_90 with the ptxas report (registers, shared memory, spills): the
#              shipping library, which the pytest and bench steps use
#   debug      the same CMake project with OEA_ROUTING_DEBUG_KNOBS (oea_trt.routing.library
#              .build_library(debug_knobs=True), cached): the harness, sanitizers, variants and the
#              knob tests of tests/test_kernel_gpu.py force paths with its experiment variables
#   harness    the standalone C++ driver of oea_route_launch (scripts/gpu/oea_routing_harness.cu)
#   pytest     tests/test_kernel_gpu.py: kernel vs reference on thousands of cases, graphs, compile
#   bench      benchmarks/bench_routing.py: per-call latency in graph replay, JSON + md + png
#   sanitizers compute-sanitizer memcheck / racecheck / synccheck / initcheck on the harness
#              (racecheck also with OEA_ROUTING_MAX_CLUSTER=1: several tokens per warp)
#   variants   per-call latency per launch variant (scripts/gpu/routing_variants.py): the general
#              kernel (OEA_ROUTING_GENERAL=1), no PDL (--pdl off), warps per CTA
# The main bench's 'before' columns come from the committed benchmarks/results/routing.json (the
# previous run), copied before anything is written.
# Steps are skipped (and reported) once the time budget ($KERNEL_BUDGET_S, default 330 s) is spent.
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT="$RESULTS_DIR/kernel"
BUILD="${OEA_KERNEL_BUILD_DIR:-$PWD/build/kernel-gpu}"
BUDGET="${KERNEL_BUDGET_S:-330}"
mkdir -p "$OUT"
SUMMARY=()
BASELINE=()
if [[ -f benchmarks/results/routing.json ]]; then
  cp benchmarks/results/routing.json "$OUT/routing_before.json"
  BASELINE=(--baseline "$OUT/routing_before.json")
fi

# run_step NAME SECONDS_NEEDED TIMEOUT COMMAND...: run with a timeout unless the budget is spent.
run_step() {
  local name=$1 need=$2 limit=$3
  shift 3
  local left=$((BUDGET - SECONDS))
  if ((left < need)); then
    SUMMARY+=("$name: SKIPPED (${left}s of the ${BUDGET}s budget left, needs ~${need}s)")
    echo "=== $name: skipped, budget spent"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (timeout ${limit}s) $(date +%T)"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  ((rc == 124)) && verdict="TIMED OUT"
  ((rc != 0 && rc != 124)) && verdict="FAILED (rc=$rc)"
  SUMMARY+=("$name: $verdict in $((SECONDS - t0))s")
  echo "=== $name: $verdict in $((SECONDS - t0))s"
  tail -n 15 "$OUT/$name.log"
  return 0
}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
GENERATOR=""
command -v ninja > /dev/null && GENERATOR="-G Ninja"
rm -rf "$BUILD"  # a clean build: the ptxas report below must cover every kernel

run_step build 60 240 bash -c "cmake -S . -B '$BUILD' $GENERATOR -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DOEA_PTXAS_VERBOSE=ON && cmake --build '$BUILD' --target oea_routing oea_routing_kernel -j $(nproc)"
# One line per kernel from the ptxas report: registers, static shared memory, stack, spills.
python3 - "$OUT/build.log" > "$OUT/ptxas_summary.txt" <<'EOF'
import re, subprocess, sys
name = None
for line in open(sys.argv[1]).read().splitlines():
    m = re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line)
    if m:
        name = subprocess.run(["c++filt", m.group(1)], capture_output=True, text=True).stdout.strip() or m.group(1)
        name = re.sub(r"\(RouteArgs.*", "", name.replace("oea::", ""))
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and name:
        frame = m.groups()
    m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
    if m and name:
        print(f"{name:60s} regs={m.group(1):>3} static_smem={m.group(2) or 0} stack={frame[0]} spills={frame[1]}/{frame[2]}")
        name = None
EOF
LIB="$BUILD/lib/liboea_routing.so"
if [[ -f "$LIB" ]]; then
  export OEA_ROUTING_LIBRARY="$LIB"
else
  echo "no $LIB: the Python binding will build its own through CMake"
fi

# The debug-knob build, into the package's cache (the knob tests of test_kernel_gpu.py find it there).
run_step debug 40 240 python3 -c "from oea_trt.routing.library import build_library, current_arch; \
print(build_library(current_arch(), debug_knobs=True))"
DEBUG_LIB="$(tail -n 1 "$OUT/debug.log")"
[[ -f "$DEBUG_LIB" ]] || DEBUG_LIB=""

HARNESS="$BUILD/oea_routing_harness"
if [[ -n "$DEBUG_LIB" ]]; then
  run_step harness 20 120 bash -c "nvcc -O2 -std=c++17 -arch=sm_90 -Iplugin scripts/gpu/oea_routing_harness.cu \
    -L'$(dirname "$DEBUG_LIB")' -loea_routing -Xlinker -rpath,'$(dirname "$DEBUG_LIB")' -o '$HARNESS' \
    && '$HARNESS' && OEA_ROUTING_FORCE_MULTIBLOCK=1 '$HARNESS' --quick"
else
  SUMMARY+=("harness: SKIPPED (no debug-knob library)")
fi

run_step pytest 60 260 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider -m gpu tests/test_kernel_gpu.py \
  --junitxml="$OUT/pytest.xml"

run_step bench 60 150 python3 benchmarks/bench_routing.py --out "$OUT" "${BASELINE[@]}"

if command -v compute-sanitizer > /dev/null && [[ -x "$HARNESS" ]]; then
  CS=(compute-sanitizer --error-exitcode 99 --print-limit 20)
  run_step memcheck 20 90 "${CS[@]}" --tool memcheck --leak-check full "$HARNESS"
  run_step memcheck_multiblock 15 60 env OEA_ROUTING_FORCE_MULTIBLOCK=1 "${CS[@]}" --tool memcheck "$HARNESS" --quick
  run_step racecheck 20 120 "${CS[@]}" --tool racecheck --racecheck-report all "$HARNESS" --quick
  run_step racecheck_one_cta 10 60 env OEA_ROUTING_MAX_CLUSTER=1 "${CS[@]}" --tool racecheck --racecheck-report all "$HARNESS" --quick
  run_step racecheck_general 10 60 env OEA_ROUTING_GENERAL=1 "${CS[@]}" --tool racecheck --racecheck-report all "$HARNESS" --quick
  run_step racecheck_spread 10 60 env OEA_ROUTING_WARPS_PER_CTA=4 "${CS[@]}" --tool racecheck --racecheck-report all "$HARNESS" --quick
  run_step synccheck 15 60 "${CS[@]}" --tool synccheck "$HARNESS" --quick
  run_step initcheck 15 60 "${CS[@]}" --tool initcheck "$HARNESS" --quick
else
  SUMMARY+=("sanitizers: SKIPPED (no compute-sanitizer or no harness binary)")
fi

variants() {
  : > "$OUT/variants.jsonl"
  for v in "default --pdl auto" "general --pdl auto OEA_ROUTING_GENERAL=1" "no_pdl --pdl off" \
           "one_cta_per_32 --pdl auto OEA_ROUTING_WARPS_PER_CTA=32"; do
    set -- $v
    local label=$1 pdl=$3
    shift 3
    env "$@" python3 scripts/gpu/routing_variants.py --label "$label" --pdl "$pdl" --library "$DEBUG_LIB" \
      --tokens 1 16 17 32 64 128 256 --k0 3 | tee -a "$OUT/variants.jsonl"
  done
}
export OUT DEBUG_LIB
export -f variants
run_step variants 40 100 bash -c variants
echo
echo "=== kernel summary ($SECONDS s total; results in $OUT)"
printf '  %s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
grep -h "passed\|failed\|error" "$OUT/pytest.log" 2>/dev/null | tail -n 2 | sed 's/^/  pytest: /' | tee -a "$OUT/summary.txt"
for tool in memcheck memcheck_multiblock racecheck racecheck_one_cta racecheck_general racecheck_spread synccheck initcheck; do
  [[ -f "$OUT/$tool.log" ]] && grep -h "ERROR SUMMARY\|cases, " "$OUT/$tool.log" | sed "s/^/  $tool: /" | tee -a "$OUT/summary.txt"
done
grep -c "spills=0/0" "$OUT/ptxas_summary.txt" 2>/dev/null | sed 's/^/  kernels without spills: /' | tee -a "$OUT/summary.txt"
[[ -f "$OUT/variants.jsonl" ]] && sed 's/^/  variant: /' "$OUT/variants.jsonl" | tee -a "$OUT/summary.txt"
[[ -f "$OUT/routing.md" ]] && sed -n '/^| T /,/^$/p;/^- /p' "$OUT/routing.md" | tee -a "$OUT/summary.txt"
for variant in; do
  [[ -f "$OUT/$variant/routing.md" ]] || continue
  echo "  --- $variant (quick run; compare with the table above)" | tee -a "$OUT/summary.txt"
  sed -n '/^| T /,/^$/p' "$OUT/$variant/routing.md" | tee -a "$OUT/summary.txt"
done
exit 0
