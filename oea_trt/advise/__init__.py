"""Choosing k0: a quality budget and a latency model in, a k0 schedule and per-layer k0 out.

    from oea_trt.advise import load_quality, benchmark_model, advise
    table = load_quality("eval_results.json")        # `oea-trt eval --layer-sensitivity`
    latency = benchmark_model("h100", "qwen3-30b-a3b")
    advice = advise(table, latency, budgets={16: 0.005}, weights={16: 1.0})
    advice.schedule, advice.layer_k0, advice.choices[16]

    latency.py  one MoE layer's microseconds vs distinct experts T (benchmark fits, memory floor)
    quality.py  delta CE per (B, k0) and per (layer, B, k0) from eval results; additivity
    predict.py  delta CE, interval and latency of a per-layer k0 vector at one batch size
    search.py   the plan (split, per-layer k0 vector, schedule) of least expected MoE time
    outputs.py  build flags, layer_k0.json, oea_config.json, advice.json
    report.py   the table and the Pareto plot
    check.py    evaluate the advised plan on the model and compare with the prediction
CLI: `oea-trt advise` (oea_trt/cli/commands/advise.py); guide: docs/choosing-k0.md.
"""
from oea_trt.advise.latency import LatencyModel, LinearFit, benchmark_model, floor_model, from_bench_results
from oea_trt.advise.predict import Choice, Predictor
from oea_trt.advise.quality import QualityTable, load_quality
from oea_trt.advise.search import Advice, advise

__all__ = ["Advice", "Choice", "LatencyModel", "LinearFit", "Predictor", "QualityTable", "advise",
           "benchmark_model", "floor_model", "from_bench_results", "load_quality"]
