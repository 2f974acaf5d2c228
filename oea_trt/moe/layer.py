"""The decode MoE layer API: hidden states + routing output -> MoE output.

    weights = ExpertWeights.random(get_preset("qwen3-30b-a3b"), device="cuda")
    routing = route(router_logits, OEAConfig(128, 8, k0=3))        # RoutingResult
    out = moe_forward(hidden_states, weights, routing)             # [T, H] bf16

Routed with route(..., signal=True) right before the MoE call on the same stream, the
one-launch kernel starts streaming gate/up on the routing's active set before the routing ends.
On CUDA our kernel runs with the config tuned for the GPU and layer shape (oea_trt/moe/tuned.py),
or with the config passed in.

Expert weights are stored the way the kernels stream them: w13 [E, 2I, H] (each expert's gate
rows, then its up rows, as Hugging Face's gate_proj / up_proj weights are [I, H]) and
w2 [E, H, I] (down_proj). No bias, no shared expert (Qwen3-MoE has neither).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from oea_trt.moe.impls import get_impl
from oea_trt.routing.reference import RoutingResult


@dataclasses.dataclass(frozen=True)
class ExpertWeights:
    w13: torch.Tensor  # [E, 2I, H]
    w2: torch.Tensor  # [E, H, I]

    def __post_init__(self):
        if self.w13.dim() != 3 or self.w2.dim() != 3:
            raise ValueError(f"w13 must be [E, 2I, H] and w2 [E, H, I], got {tuple(self.w13.shape)} and "
                             f"{tuple(self.w2.shape)}")
        E, two_i, H = self.w13.shape
        if two_i % 2 or self.w2.shape != (E, H, two_i // 2):
            raise ValueError(f"w2 must be [E={E}, H={H}, I={two_i // 2}] to match w13 {tuple(self.w13.shape)}, "
                             f"got {tuple(self.w2.shape)}")

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
        """Random experts of a shapes.MoEShape, scaled so activations stay O(1) (never zeros:
        a benchmark must not time on zeros). Generated on `device` (fast on a GPU)."""
        E = num_experts or shape.num_experts
        H, I = shape.hidden_size, shape.moe_intermediate_size
        g = torch.Generator(device=device).manual_seed(seed)
        w13 = torch.randn((E, 2 * I, H), generator=g, device=device, dtype=dtype).mul_(H ** -0.5)
        w2 = torch.randn((E, H, I), generator=g, device=device, dtype=dtype).mul_(I ** -0.5)
        return cls(w13, w2)


def moe_forward(
    hidden_states: torch.Tensor,
    weights: ExpertWeights,
    routing: Optional[RoutingResult] = None,
    *,
    impl: str = "auto",
    config=None,
    expert_ids: Optional[torch.Tensor] = None,
    routing_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """MoE output [T, H] for hidden_states [T, H], routed either by a RoutingResult or by
    expert_ids int32 [T, k] + routing_weights float32 [T, k]. Slots with ids outside [0, E)
    are skipped. impl: "auto" (triton on CUDA, else the loop) or a name of impls.IMPLS.
    config: our kernel's KernelConfig, overriding the one tuned for this GPU and shape (on
    CUDA; the heuristic default elsewhere); None for the other impls. On CUDA our kernel's calls
    on one device must be stream-ordered (oea_trt.moe.triton.fused_moe)."""
    if routing is not None:
        if expert_ids is not None or routing_weights is not None:
            raise ValueError("pass either routing or expert_ids + routing_weights, not both")
    elif expert_ids is None or routing_weights is None:
        raise ValueError("moe_forward needs a RoutingResult or both expert_ids and routing_weights")
    else:
        from oea_trt.moe.grouping import active_mask_from_ids

        mask = active_mask_from_ids(expert_ids, weights.num_experts)
        routing = RoutingResult(expert_ids, routing_weights, mask, mask.sum(dtype=torch.int32))
    chosen = get_impl(("triton" if hidden_states.is_cuda else "loop") if impl == "auto" else impl)
    if config is not None and not chosen.ours:
        raise ValueError(f"impl {chosen.name!r} takes no KernelConfig (config=None); only our kernel does: "
                         f"impl='triton'")
    if chosen.ours and config is None and hidden_states.is_cuda:
        from oea_trt.moe.tuned import config_for

        config = config_for(hidden_states, weights.w13, routing.expert_ids.shape[1])
    return chosen.run(hidden_states, weights, routing, config)
