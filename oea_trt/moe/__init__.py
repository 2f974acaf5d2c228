"""Decode MoE layer for Qwen3-MoE expert shapes, fed by the routing output.

Four implementations of one contract (SwiGLU experts, bf16, no bias, no shared expert;
routing slots whose expert id lies outside [0, E) are skipped):
  reference.py    plain PyTorch loop over experts: the correctness oracle
  grouped_mm.py   torch._grouped_mm (PyTorch's grouped GEMM): the library baseline
  triton_kernel.py  our expert-major fused kernel: each active expert's weights are read
                  from HBM once per call, all of its tokens multiplied against them; three
                  launches (gate/up, down, combine), deterministic; one_launch.py walks the
                  same work items in one persistent launch (the default up to 16 tokens)
  fused_kernel.py an older one-launch kernel (fp32 atomics into a self-cleaning workspace):
                  sums in nondeterministic order
layer.py picks one behind a small API. Triton is imported only by the kernel modules.
"""
from oea_trt.moe.layer import IMPLS, ExpertWeights, moe_forward

__all__ = ["IMPLS", "ExpertWeights", "moe_forward"]
