#!/usr/bin/env bash
# Builds the routing kernel's library (or finds it cached) before a GPU part tests or times with
# it, so its one-time CMake build does not eat the tests' or the benchmark's time budget.
#   bash scripts/gpu/routing_library.sh LOG SECONDS    (exit status: the build's; 124 = timed out)
# Without it the benchmarks route with the torch reference and their reports say so.
set -u
log="$1"
limit="$2"
timeout "$limit" python3 -c "from oea_trt.routing.kernel import load_library; print('routing kernel:', load_library())" \
  > "$log" 2>&1
rc=$?
tail -n 2 "$log"
[ $rc -eq 0 ] || echo "routing kernel unavailable (rc=$rc): routing falls back to the torch reference"
exit $rc
