"""Quality of OEA on a real model: cross-entropy on simulated decode batches (`oea-trt eval`).

    from oea_trt.eval import load_model, evaluate, format_table, pareto_plot
    model, tokenizer = load_model()                      # the embedded Qwen3-MoE LM
    ids, domains = eval_sequences(tokenizer, count=64, length=128)
    rows = evaluate(model, ids, batches=(4, 16, 64))     # vanilla, OEA and pruning per (B, k0)
    print(format_table(rows)); pareto_plot(rows, "eval_pareto.png")

Semantics (the paper's): decode batch t of size B = the t-th token of B sequences, all decode
tokens; per (B, k0): mean distinct experts T per layer, delta next-token cross-entropy vs
vanilla with a 95% paired bootstrap interval over sequences, for OEA and for top-k0 pruning
without piggybacking. Router-logit traces for benchmarks: oea_trt.eval.traces.
"""
from oea_trt.eval.data import eval_sequences
from oea_trt.eval.model import EMBEDDED_MODEL_DIR, load_model, resolve_model_dir
from oea_trt.eval.plot import pareto_plot
from oea_trt.eval.report import format_table, oea_beats_pruning, write_json
from oea_trt.eval.sweep import Row, evaluate, sequence_ce
from oea_trt.eval.traces import dump_traces, load_traces, record_router_logits

__all__ = ["EMBEDDED_MODEL_DIR", "Row", "dump_traces", "eval_sequences", "evaluate", "format_table",
           "load_model", "load_traces", "oea_beats_pruning", "pareto_plot", "record_router_logits",
           "resolve_model_dir", "sequence_ce", "write_json"]
