#!/usr/bin/env bash
# GPU part "decode_tests" (~2 min): the decode GPU tests alone, after the routing kernel's build.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/decode_tests.sh
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT_DIR="${RESULTS_DIR:-./out}/decode_tests"
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 90
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_decode_gpu.py > "$OUT_DIR/pytest.log" 2>&1
rc=$?
grep -E "^(FAILED|ERROR)|Error|passed|failed" "$OUT_DIR/pytest.log" | tail -n 12
exit $rc
