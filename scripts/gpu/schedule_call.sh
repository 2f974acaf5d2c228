#!/usr/bin/env bash
# GPU call for issue 20 (one H100, about 5 min): what the shipped small-T schedules read at with
# their stores and no math (read_floor.cu probes 14: static items with the per-expert hand-off, the
# B=4 path's order; 15: two launches joined by a programmatic dependent launch, the B=1 path's),
# beside 3 and 9 (run 9) and the shipped kernel; and whether moving each w13 item's fence and count
# past the next item's first loads takes the stores' cost away (17, its control 18); and what the
# one-launch kernel's second release, a count after each down item's stores, costs (19; B=8 and 16 run
# that kernel).
#   RESULTS_DIR=/tmp/r bash scripts/gpu/schedule_call.sh
set -u
cd "$(dirname "$0")/../.."
R="${RESULTS_DIR:-./out}"
RESULTS_DIR="$R" BUDGET_S="${BUDGET_S:-200}" TIMEOUT_S="${TIMEOUT_S:-300}" bash scripts/gpu/moe_stream/call.sh \
  --batch ${BATCHES:-4 1 8 16} --cases 4 --read-floor --read-probes 3 9 14 15 17 18 19 --probe-ctas-per-sm 4 \
  --variants 6:4:1
