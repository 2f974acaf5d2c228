#!/usr/bin/env bash
# Run the named GPU parts (scripts/gpu/<part>.sh) in one device call and pack their results.
#   scripts/gpu/run_all.sh kernel plugin moe train
# Each part writes under $RESULTS_DIR/<part>/; everything comes back as $OUT/results.tgz
# (the device call returns at most 8 files) plus a combined log.
set -u
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
export RESULTS_DIR="${RESULTS_DIR:-/tmp/oea-results}"
OUT="${OUT:-$PWD/out}"
mkdir -p "$RESULTS_DIR" "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$RESULTS_DIR/gpu.txt"
for part in "$@"; do
  echo "=== $part: start $(date +%T)"
  start=$SECONDS
  bash "scripts/gpu/$part.sh" > "$RESULTS_DIR/$part.log" 2>&1
  rc=$?
  echo "=== $part: rc=$rc after $((SECONDS - start)) s"
  tail -n 40 "$RESULTS_DIR/$part.log"
done
# A returned file may hold at most 16 MiB: pack, then split into 15 MB parts
# (join here with: cat results.tgz.part* | tar -xz).
tar -czf /tmp/oea-results.tgz -C "$RESULTS_DIR" .
split -b 15000000 -d /tmp/oea-results.tgz "$OUT/results.tgz.part"
ls -la "$OUT"
