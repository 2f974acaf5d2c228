"""MoE layer shapes of the models OEA targets (from their Hugging Face config.json files)."""
from __future__ import annotations

import dataclasses
from typing import Dict


@dataclasses.dataclass(frozen=True)
class MoEShape:
    """One MoE layer's routing and expert shape. Experts are SwiGLU: gate/up [I, H], down [H, I]."""

    name: str
    num_experts: int
    top_k: int
    hidden_size: int
    moe_intermediate_size: int
    num_moe_layers: int
    norm_topk_prob: bool = True
    weight_bytes: int = 2  # bf16

    @property
    def expert_bytes(self) -> int:
        """Bytes of one expert's weights (gate, up and down projections)."""
        return 3 * self.hidden_size * self.moe_intermediate_size * self.weight_bytes

    def floor_us(self, active_experts: float, bandwidth_tb_s: float) -> float:
        """Memory-bound floor of one MoE layer: active experts' bytes over bandwidth, in us."""
        return active_experts * self.expert_bytes / (bandwidth_tb_s * 1e12) * 1e6


PRESETS: Dict[str, MoEShape] = {
    s.name: s
    for s in (
        MoEShape("qwen3-30b-a3b", 128, 8, 2048, 768, 48),
        MoEShape("qwen3-235b-a22b", 128, 8, 4096, 1536, 94),
        # The paper's 235B measurement: tensor parallel 8 splits every expert's intermediate dim.
        MoEShape("qwen3-235b-a22b-tp8", 128, 8, 4096, 1536 // 8, 94),
    )
}


def get_preset(name: str) -> MoEShape:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
