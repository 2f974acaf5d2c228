#!/usr/bin/env bash
# GPU part "routing_sass_profile": per-SASS-instruction profile of the decode routing kernel
# (ncu source counters: executed instructions and warp-stall samples per instruction) at
# T = 1, 32 and 64, launch-option timings and the GPU's launch / cluster / PDL floors
# (scripts/gpu/launch_floor.cu), all packed into one tarball (~2 min).
#   RESULTS_DIR=/tmp/r bash scripts/gpu/routing_sass_profile.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT="$RESULTS_DIR/routing_sass_profile"
mkdir -p "$OUT" build/prof
# The kernel's CMake project with the experiment knobs and line info (ncu's source view).
LIB=build/prof/lib/liboea_routing.so
{ cmake -S plugin -B build/prof -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DOEA_ROUTING_DEBUG_KNOBS=ON \
    -DCMAKE_CUDA_FLAGS=-lineinfo && cmake --build build/prof --target oea_routing -j "$(nproc)"; } > "$OUT/build.log" 2>&1
export OEA_ROUTING_LIBRARY="$PWD/$LIB"
nvcc -O3 -std=c++17 -arch=sm_90 scripts/gpu/launch_floor.cu -o build/prof/launch_floor && \
  timeout 60 build/prof/launch_floor > "$OUT/launch_floor.txt" 2>&1
cuobjdump -sass $LIB | gzip > "$OUT/lib.sass.gz"
for v in "default auto" "no_pdl off" "w32 auto OEA_ROUTING_WARPS_PER_CTA=32" "w16 auto OEA_ROUTING_WARPS_PER_CTA=16" \
         "w4 auto OEA_ROUTING_WARPS_PER_CTA=4"; do
  set -- $v; label=$1; pdl=$2; shift 2
  timeout 60 env "$@" python3 scripts/gpu/routing_variants.py --label "$label" --pdl "$pdl" --library "$PWD/$LIB" \
    --tokens 1 8 16 17 24 32 48 64 128 256 --k0 3 8 2>>"$OUT/variants.err" | tee -a "$OUT/variants.jsonl"
done
for T in 1 32 64; do
  timeout 90 ncu --kernel-name regex:oea_route_decode --launch-skip 4 --launch-count 1 --section SourceCounters \
    --section WarpStateStats --section LaunchStats --section SpeedOfLight --import-source yes -f -o /tmp/sp_T$T \
    python3 scripts/gpu/routing_profile.py --tokens $T > "$OUT/ncu_T$T.log" 2>&1
  ncu --import /tmp/sp_T$T.ncu-rep --page source --csv --print-source sass > "$OUT/sass_T$T.csv" 2>>"$OUT/ncu_T$T.log"
  ncu --import /tmp/sp_T$T.ncu-rep --page details --csv > "$OUT/details_T$T.csv" 2>>"$OUT/ncu_T$T.log"
  gzip -f "$OUT/sass_T$T.csv"
done
ls -la "$OUT"
