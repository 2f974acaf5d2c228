"""Shared GPU benchmark utilities (how we measure: docs/moe-benchmark.md), generic over what is timed:
  timing.py     CUDA-graph capture and replay timing (median of repeats), eager timing
  rotation.py   how many weight copies keep one replay from finding the last one's bytes in L2
  bandwidth.py  device copy and read bandwidth, measured in the same run as the benchmark
  env.py        machine-readable run metadata (GPU, driver, torch/triton/CUDA, git commit)
  report.py     JSON, markdown tables and PNG plots (matplotlib Agg, imported lazily)
  moe_timing.py one MoE call's static inputs, graph timing and error against the reference
  moe.py        the MoE layer benchmark (`oea-trt bench moe`, benchmarks/bench_moe.py)
  report_moe.py its markdown report, plots and summary
  tune.py       our MoE kernel's config search (`oea-trt bench tune`): the tuned-config files
  decode.py     the whole-model decode benchmark (`oea-trt bench decode`: decode_cli.py; its
                transformers baselines decode_hf.py, its report report_decode.py)
Nothing here is imported by `import oea_trt`.
"""
