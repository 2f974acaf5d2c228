#!/usr/bin/env bash
# GPU part "decode_checks" (issues 15 and 16, ~8 min on an H100): the installed package away from
# the checkout, the decode GPU tests, the MoE GPU tests of the prefill path, `oea-trt generate` on the embedded model, then the
# determinism probe (scripts/gpu/determinism.py) for whatever time is left.
#   RESULTS_DIR=/tmp/r [CHECKS_BUDGET=570] bash scripts/gpu/decode_checks.sh   (seconds for the whole part)
# Writes $RESULTS_DIR/decode_checks/{pytest.log,generate.log,determinism.log,determinism.json}
# and $RESULTS_DIR/installed_package/.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/decode_checks"
mkdir -p "$OUT_DIR"
start=$SECONDS
failed=""

echo "== installed package ($(date +%T))"
timeout 200 bash scripts/gpu/installed_package.sh > "$OUT_DIR/installed_package.log" 2>&1
rc=$?
tail -n 12 "$OUT_DIR/installed_package.log"
[ $rc -eq 0 ] || failed="$failed installed-package(rc=$rc)"
echo "== installed package: $((SECONDS - start)) s"

echo "== routing kernel library ($(date +%T))"
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90

echo "== decode GPU tests ($(date +%T))"
timeout 160 python3 -m pytest -q -p no:cacheprovider -rs tests/test_decode_gpu.py > "$OUT_DIR/pytest.log" 2>&1
rc=$?
grep -E "^(FAILED|ERROR)|AssertionError|passed|failed" "$OUT_DIR/pytest.log" | tail -n 12
[ $rc -eq 0 ] || failed="$failed gpu-tests(rc=$rc)"
echo "== tests: $((SECONDS - start)) s"

echo "== MoE GPU tests of the prefill path and determinism ($(date +%T))"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py -k "grouped or deterministic or graph_replay_follows" \
  > "$OUT_DIR/moe_tests.log" 2>&1
rc=$?
tail -n 2 "$OUT_DIR/moe_tests.log"
[ $rc -eq 0 ] || failed="$failed moe-tests(rc=$rc)"

echo "== oea-trt generate, embedded model ($(date +%T))"
timeout 60 python3 -m oea_trt.cli generate --batch 16 --k0 3 --max-new-tokens 96 > "$OUT_DIR/generate.log" 2>&1
rc=$?
tail -n 8 "$OUT_DIR/generate.log"
[ $rc -eq 0 ] || failed="$failed generate(rc=$rc)"

left=$(( ${CHECKS_BUDGET:-570} - (SECONDS - start) ))
echo "== determinism probe, $left s left ($(date +%T))"
if [ "$left" -gt 40 ]; then
  timeout "$left" python3 scripts/gpu/determinism.py "$OUT_DIR" --steps 64 --replays 2000 > "$OUT_DIR/determinism.log" 2>&1
  echo "determinism: rc=$?"
  tail -n 20 "$OUT_DIR/determinism.log"
fi
echo "== decode_checks after $((SECONDS - start)) s; failed:${failed:- none}"
[ -z "$failed" ]
