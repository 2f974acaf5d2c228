"""The decode MoE layer API: hidden states + routing output -> MoE output.

    weights = ExpertWeights.random(get_preset("qwen3-30b-a3b"), device="cuda")
    routing = route(router_logits, OEAConfig(128, 8, k0=3))        # RoutingResult
    out = moe_forward(hidden_states, weights, routing)             # [T, H] bf16

Routed with route(..., signal=True) right before the MoE call on the same stream, the
one-launch kernel starts streaming gate/up on the routing's active set before the routing ends.

Expert weights are stored the way the kernels stream them: w13 [E, 2I, H] (each expert's gate
rows, then its up rows, as Hugging Face's gate_proj / up_proj weights are [I, H]) and
w2 [E, H, I] (down_proj). No bias, no shared expert (Qwen3-MoE has neither). Optionally also
w2_t [E, I, H], down_proj with each expert transposed: the one-launch kernel (impl "fused") can
read a chunk of the intermediate dim as one contiguous block from it (with_down_transposed()).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import torch

from oea_trt.routing.reference import RoutingResult

#: impl name -> what it is. "fused" and "triton" are ours; "grouped_mm" the PyTorch library
#: baseline; "loop" the reference (slow, host-synchronising: never in a CUDA graph).
IMPLS: Dict[str, str] = {
    "fused": "expert-major Triton kernel, the whole layer in one launch, fp32 atomic sums (oea_trt/moe/fused_kernel.py)",
    "triton": ("expert-major fused Triton kernel, deterministic: one launch up to 16 tokens (oea_trt/moe/"
               "one_launch.py), else three (gate/up, down, combine) with programmatic dependent launch "
               "(oea_trt/moe/triton/three_launch.py)"),
    "grouped_mm": "torch._grouped_mm baseline (oea_trt/moe/grouped_mm.py)",
    "loop": "plain PyTorch loop over experts (oea_trt/moe/reference.py)",
}


@dataclasses.dataclass(frozen=True)
class ExpertWeights:
    w13: torch.Tensor  # [E, 2I, H]
    w2: torch.Tensor  # [E, H, I]
    w2_t: Optional[torch.Tensor] = None  # [E, I, H] contiguous, or None

    def __post_init__(self):
        if self.w13.dim() != 3 or self.w2.dim() != 3:
            raise ValueError(f"w13 must be [E, 2I, H] and w2 [E, H, I], got {tuple(self.w13.shape)} and "
                             f"{tuple(self.w2.shape)}")
        E, two_i, H = self.w13.shape
        if two_i % 2 or self.w2.shape != (E, H, two_i // 2):
            raise ValueError(f"w2 must be [E={E}, H={H}, I={two_i // 2}] to match w13 {tuple(self.w13.shape)}, "
                             f"got {tuple(self.w2.shape)}")
        if self.w2_t is not None and (self.w2_t.shape != (E, two_i // 2, H) or not self.w2_t.is_contiguous()):
            raise ValueError(f"w2_t must be a contiguous [E={E}, I={two_i // 2}, H={H}] tensor, got "
                             f"{tuple(self.w2_t.shape)}")

    def with_down_transposed(self) -> "ExpertWeights":
        """These weights plus w2_t (a copy: one third more memory)."""
        return dataclasses.replace(self, w2_t=self.w2.transpose(1, 2).contiguous())

    def down(self, layout: str = "hi") -> torch.Tensor:
        """down_proj as [E, H, I]: w2 itself ("hi"), or the view of w2_t ("ih") when there is one."""
        return self.w2_t.transpose(1, 2) if layout == "ih" and self.w2_t is not None else self.w2

    @property
    def num_experts(self) -> int:
        return self.w13.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.w13.shape[2]

    @property
    def intermediate_size(self) -> int:
        return self.w2.shape[2]

    @property
    def expert_bytes(self) -> int:
        return (self.w13[0].numel() + self.w2[0].numel()) * self.w13.element_size()

    @classmethod
    def from_gate_up_down(cls, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> "ExpertWeights":
        """From per-expert stacks as in Hugging Face: gate, up [E, I, H]; down [E, H, I]."""
        return cls(torch.cat([gate, up], dim=1).contiguous(), down.contiguous())

    @classmethod
    def random(cls, shape, device="cpu", dtype=torch.bfloat16, seed: int = 0,
               num_experts: Optional[int] = None) -> "ExpertWeights":
        """Random experts of a presets.MoEShape, scaled so activations stay O(1) (never zeros:
        a benchmark must not time on zeros). Generated on `device` (fast on a GPU)."""
        E = num_experts or shape.num_experts
        H, I = shape.hidden_size, shape.moe_intermediate_size
        g = torch.Generator(device=device).manual_seed(seed)
        w13 = torch.randn((E, 2 * I, H), generator=g, device=device, dtype=dtype).mul_(H ** -0.5)
        w2 = torch.randn((E, H, I), generator=g, device=device, dtype=dtype).mul_(I ** -0.5)
        return cls(w13, w2)


def _impl(name: str) -> Callable:
    if name == "fused":
        from oea_trt.moe.fused_kernel import fused_moe as fused

        return fused
    if name == "triton":
        from oea_trt.moe.triton.three_launch import fused_moe

        return fused_moe
    if name == "grouped_mm":
        from oea_trt.moe.grouped_mm import moe_grouped_mm

        return lambda x, w13, w2, ids, wts, active_mask=None: moe_grouped_mm(x, w13, w2, ids, wts)
    if name == "loop":
        from oea_trt.moe.reference import moe_reference

        return lambda x, w13, w2, ids, wts, active_mask=None: moe_reference(x, w13, w2, ids, wts)
    raise ValueError(f"unknown MoE implementation {name!r}; choose one of: {', '.join(IMPLS)}")


def moe_forward(
    hidden_states: torch.Tensor,
    weights: ExpertWeights,
    routing: Optional[RoutingResult] = None,
    *,
    expert_ids: Optional[torch.Tensor] = None,
    routing_weights: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> torch.Tensor:
    """MoE output [T, H] for hidden_states [T, H], routed either by a RoutingResult or by
    expert_ids int32 [T, k] + routing_weights float32 [T, k]. Slots with ids outside [0, E)
    are skipped. impl: "auto" (triton on CUDA, else the loop), "fused", "triton", "grouped_mm",
    "loop". "fused" reads w2_t when the weights carry it."""
    extra = {}
    if routing is not None:
        if expert_ids is not None or routing_weights is not None:
            raise ValueError("pass either routing or expert_ids + routing_weights, not both")
        expert_ids, routing_weights, active_mask = routing.expert_ids, routing.weights, routing.active_mask
    elif expert_ids is None or routing_weights is None:
        raise ValueError("moe_forward needs a RoutingResult or both expert_ids and routing_weights")
    else:
        active_mask = None
    if impl == "auto":
        impl = "triton" if hidden_states.is_cuda else "loop"
    fn = _impl(impl)
    w2 = weights.down("ih") if impl == "fused" else weights.w2
    if impl == "triton" and routing is not None:  # routed with signal=True: may start before the routing ends
        extra["active_ready"] = routing.active_ready
    return fn(hidden_states, weights.w13, w2, expert_ids, routing_weights, active_mask=active_mask, **extra)
