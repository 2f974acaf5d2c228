#!/usr/bin/env bash
# GPU call for the moe_stream prototype (issue 20): build, check against the fp32 loop, time beside
# the shipped Triton config at B=1-16.   RESULTS_DIR=/tmp/r bash scripts/gpu/moe_stream/call.sh
set -u
cd "$(dirname "$0")/../../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
R="${RESULTS_DIR:-./out}"
mkdir -p "$R"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tee "$R/gpu.txt"
timeout "${TIMEOUT_S:-380}" python3 scripts/gpu/moe_stream/moe_stream.py --json "$R/moe_stream.json" \
  --budget "${BUDGET_S:-220}" "$@" 2>&1 | grep -v -i warn | tee "$R/moe_stream.txt"
echo "rc=${PIPESTATUS[0]}"
if [ -n "${SANITIZE:-}" ]; then  # memory and barrier checks on a few calls (slow: keep it small)
  for tool in ${SANITIZE_TOOLS:-memcheck synccheck}; do
    timeout 100 compute-sanitizer --tool "$tool" --print-limit 20 python3 scripts/gpu/moe_stream/moe_stream.py --check-only \
      --cases 4 --variants 6:4:1 6:0:1 6:4:0 2>&1 | grep -v -i warn > "$R/sanitizer_$tool.txt"
    head -n 40 "$R/sanitizer_$tool.txt"  # the first errors, if any
    [ "$(wc -l < "$R/sanitizer_$tool.txt")" -gt 40 ] && tail -n 4 "$R/sanitizer_$tool.txt"  # and the summary
  done
fi
