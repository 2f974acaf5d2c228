"""Decode MoE layer for Qwen3-MoE expert shapes, fed by the routing output.

Implementations of one contract (SwiGLU experts, bf16, no bias, no shared expert; routing
slots whose expert id lies outside [0, E) are skipped), listed in impls.py:
  triton/         our expert-major fused kernel: each active expert's weights are read from
                  HBM once per call, all of its tokens multiplied against them; one launch or
                  three, deterministic
  grouped_mm.py   torch._grouped_mm (PyTorch's grouped GEMM) after grouping.py's sort: the
                  library baseline
  reference.py    plain PyTorch loop over experts: the correctness oracle
layer.py is the API (ExpertWeights, moe_forward); tuned.py reads the kernel configs tuned per
GPU and layer shape (tuned_configs/, written by `oea-trt bench tune`); shapes.py holds the
model presets. Triton is imported only when our kernel first runs.
"""
from oea_trt.moe.impls import IMPLS
from oea_trt.moe.layer import ExpertWeights, moe_forward

__all__ = ["IMPLS", "ExpertWeights", "moe_forward"]
