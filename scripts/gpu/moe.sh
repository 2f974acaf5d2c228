#!/usr/bin/env bash
# MoE decode layer on the GPU box: GPU tests of the layer, then the benchmark, which times our
# kernel (moe_forward with the configs shipped for this GPU, oea_trt/moe/tuned_configs/, else its
# heuristic default; scripts/gpu/tune.sh makes them) vs torch._grouped_mm.
#   bash scripts/gpu/moe.sh            (from anywhere; RESULTS_DIR defaults to ./out)
# Writes $RESULTS_DIR/moe/: pytest.log, bench.log, bench_trace.log, results.json, report.md, latency_vs_T.png,
# latency_vs_B.png (report.md and the PNGs are rewritten after each preset, so a run cut short
# keeps what it measured), and trace/ the same for the recorded routing. Budget ~8.5 min: tests
# (mostly Triton compiles of both paths, PDL on and off, cached for the benchmark; cut at 270 s),
# the routing kernel's nvcc build if not cached, then the benchmark over uniform and skewed
# routing, which starts no new (preset, routing, batch) block after 185 s (30B first, the TP8
# shard, then the full 235B layer on fewer rows: B 1 4 16 64, k0 1 3 5), then the 30B layer fed
# the embedded model's recorded router logits.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT_DIR="$RESULTS_DIR/moe"
mkdir -p "$OUT_DIR"
failed=""
start=$SECONDS

# The routing kernel goes inside the timed graphs and the routing -> one-launch tests; its one-time
# nvcc build (skipped when the kernel part already built it) must not eat the tests' or the
# benchmark's budget.
echo "== moe: routing kernel library ($(date +%T))"
bash scripts/gpu/routing_library.sh "$OUT_DIR/routing_kernel.log" 240

# MOE_TESTS=0: skip the GPU tests, only for a rerun of kernels whose tests passed on the GPU box
# (say so in the note); the log records the skip.
if [ "${MOE_TESTS:-1}" != 0 ]; then
echo "== moe: GPU tests ($(date +%T))"
# No -x: a failure in one kernel's tests must not hide the other's results.
timeout 270 python3 -m pytest -q -p no:cacheprovider tests/test_moe_gpu.py tests/test_moe_triton.py \
  tests/test_moe_one_launch.py tests/test_moe_tuned.py > "$OUT_DIR/pytest.log" 2>&1
rc=$?
tail -n 15 "$OUT_DIR/pytest.log"
[ $rc -eq 0 ] || failed="$failed gpu-tests(rc=$rc)"
echo "== moe: tests took $((SECONDS - start)) s"
else
echo "== moe: GPU tests skipped (MOE_TESTS=0)" | tee "$OUT_DIR/pytest.log"
fi

echo "== moe: benchmark ($(date +%T))"
timeout 250 python3 -m oea_trt.cli bench moe --out "$OUT_DIR" --time-budget 185 --routing uniform skewed \
  --preset qwen3-30b-a3b qwen3-235b-a22b-tp8 qwen3-235b-a22b --lite-preset qwen3-235b-a22b \
  2>&1 | tee "$OUT_DIR/bench.log"
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] || failed="$failed benchmark(rc=$rc)"

# The embedded model's recorded routing on the 30B layer, a run of its own: with all three
# routings in one run the full 235B layer's rows no longer fit the budget.
echo "== moe: benchmark, recorded routing ($(date +%T))"
timeout 110 python3 -m oea_trt.cli bench moe --out "$OUT_DIR/trace" --time-budget 70 --routing trace \
  --preset qwen3-30b-a3b 2>&1 | tee "$OUT_DIR/bench_trace.log"
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] || failed="$failed benchmark-trace(rc=$rc)"

echo "== moe: summary after $((SECONDS - start)) s"
if [ -f "$OUT_DIR/report.md" ]; then
  sed -n '/^## Targets/,/^## Our kernels (/p' "$OUT_DIR/report.md" | head -n 70
fi
ls -la "$OUT_DIR"
if [ -n "$failed" ]; then
  echo "moe: FAILED steps:$failed"
  exit 1
fi
echo "moe: all steps passed"
