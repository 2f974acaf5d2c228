#!/usr/bin/env bash
# GPU part "routing_profile": where the routing kernel's microseconds go (issue 3), ~3 min.
#   launch_floor   scripts/gpu/launch_floor.cu: launch floors, cluster and PDL costs, and
#                  dependent-chain latencies (redux, shfl, expf, div, smem atomics) in cycles
#   variants       per-call latency (graph replay) under each launch option set
#   ncu            one launch each at T = 1, 16, 32, 64 (full set, source counters with -lineinfo),
#                  exported as text: details and per-CUDA-line / per-SASS warp-stall samples
#   sass           the SASS of the fused kernel (bf16, 4 keys per lane)
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT="$RESULTS_DIR/routing_profile"
mkdir -p "$OUT" build/prof
LIB=build/prof/liboea_routing.so
nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC -cudart static -lineinfo -gencode=arch=compute_90,code=sm_90 \
  -Xlinker=--version-script=plugin/oea_routing.map -o $LIB plugin/oea_routing.cu > "$OUT/build.log" 2>&1 \
  || { echo "build failed"; cat "$OUT/build.log"; }
export OEA_ROUTING_LIBRARY="$PWD/$LIB"

echo "== launch_floor $(date +%T)"
nvcc -O3 -std=c++17 -arch=sm_90 scripts/gpu/launch_floor.cu -o build/prof/launch_floor && \
  timeout 60 build/prof/launch_floor 2>&1 | tee "$OUT/launch_floor.txt"

echo "== variants $(date +%T)"
variant() {  # LABEL ENV...
  local label=$1; shift
  timeout 60 env "$@" python3 scripts/gpu/routing_variants.py --label "$label" ${TOKENS:-} 2>>"$OUT/variants.err" \
    | tee -a "$OUT/variants.jsonl"
}
variant default OEA_X=0
variant pdl OEA_ROUTING_PDL=1
variant w16 OEA_ROUTING_WARPS_PER_CTA=16
variant w8 OEA_ROUTING_WARPS_PER_CTA=8
variant w4 OEA_ROUTING_WARPS_PER_CTA=4
variant w8_pdl OEA_ROUTING_WARPS_PER_CTA=8 OEA_ROUTING_PDL=1
variant multiblock OEA_ROUTING_FORCE_MULTIBLOCK=1

echo "== sass $(date +%T)"
if command -v cuobjdump > /dev/null; then
  cuobjdump -sass $LIB > "$OUT/all.sass" 2>&1
  python3 - "$OUT/all.sass" > "$OUT/fused_bf16_vpl4.sass" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n(?=\s*Function : )", text)
for b in blocks:
    head = b.strip().splitlines()[0] if b.strip() else ""
    if "oea_route_fused_kernel" in head and "nv_bfloat16" in head or ("fused" in head and "ILi4E" in head and "13__nv_bfloat16" in head):
        print(b)
PY
  wc -l "$OUT/fused_bf16_vpl4.sass"
  gzip -f "$OUT/all.sass"
fi

echo "== ncu $(date +%T)"
if command -v ncu > /dev/null; then
  for T in 1 16 32 64; do
    timeout 120 ncu --kernel-name regex:oea_route_fused --launch-skip 4 --launch-count 1 --set full \
      --import-source yes --force-overwrite -o "$OUT/ncu_T$T" \
      python3 scripts/gpu/routing_profile.py --tokens $T > "$OUT/ncu_T$T.log" 2>&1
    tail -n 3 "$OUT/ncu_T$T.log"
    R="$OUT/ncu_T$T.ncu-rep"
    [ -f "$R" ] || continue
    ncu --import "$R" --page details --csv > "$OUT/ncu_T${T}_details.csv" 2>&1
    ncu --import "$R" --page source --csv --print-source cuda > "$OUT/ncu_T${T}_source_cuda.csv" 2>&1 || true
    ncu --import "$R" --page source --csv --print-source sass > "$OUT/ncu_T${T}_source_sass.csv" 2>&1 || true
    ncu --import "$R" --page raw --csv > "$OUT/ncu_T${T}_raw.csv" 2>&1 || true
    grep -i "Duration\|Elapsed Cycles\|SM Frequency\|Registers Per\|Warp Cycles Per Issued" "$OUT/ncu_T${T}_details.csv" | head -8
    wc -c "$OUT"/ncu_T${T}_*.csv
  done
else
  echo "no ncu"
fi
echo "== routing_profile done $(date +%T)"
