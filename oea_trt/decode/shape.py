"""What a Qwen3-MoE decoder is made of, as far as the decode path needs: dimensions, which
layers are MoE, and the two numerics knobs (RMSNorm epsilon, RoPE base).

Read from a Hugging Face config (dict, config.json or its directory) through
oea_trt.plan.qwen3_moe_spec, which validates the Qwen3-MoE fields; the two knobs it does not
carry are read here. Only the default RoPE (no scaling) is supported: Qwen3-30B-A3B and the
embedded model use it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from oea_trt.plan.hf_config import HFConfigError, load_hf_config, qwen3_moe_spec


@dataclasses.dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    moe_intermediate_size: int
    num_experts: int
    top_k: int
    norm_topk_prob: bool = True
    intermediate_size: int = 0          # dense SwiGLU width (only layers outside moe_layers use it)
    moe_layers: Optional[Tuple[int, ...]] = None   # None: every layer
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 40960

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "moe_intermediate_size", "num_experts", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        layers = tuple(range(self.num_layers)) if self.moe_layers is None else tuple(sorted(set(self.moe_layers)))
        if any(not 0 <= i < self.num_layers for i in layers):
            raise ValueError(f"moe_layers must be layer indices in [0, {self.num_layers}), got {self.moe_layers}")
        object.__setattr__(self, "moe_layers", layers)
        if len(layers) < self.num_layers and self.intermediate_size < 1:
            raise ValueError("dense layers (outside moe_layers) need intermediate_size >= 1")

    # ---- derived sizes -----------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def group_size(self) -> int:
        """Query heads per KV head (grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    def is_moe(self, layer: int) -> bool:
        return layer in self.moe_layers

    def expert_bytes(self, element_size: int = 2) -> int:
        """One expert's gate, up and down weights."""
        return 3 * self.hidden_size * self.moe_intermediate_size * element_size

    def dense_bytes_per_step(self, element_size: int = 2) -> int:
        """Weights every decode step reads whatever the routing: attention, routers, norms, dense
        MLPs and the LM head (the embedding is gathered, a few rows)."""
        H = self.hidden_size
        per_layer = (self.qkv_size + self.q_size) * H + 2 * H + 2 * self.head_dim
        dense = sum(3 * H * self.intermediate_size for i in range(self.num_layers) if not self.is_moe(i))
        routers = len(self.moe_layers) * self.num_experts * H
        return (self.num_layers * per_layer + dense + routers + H + self.vocab_size * H) * element_size

    def kv_bytes_per_token(self, element_size: int = 2) -> int:
        """KV-cache bytes one token position holds over all layers (keys and values)."""
        return 2 * self.num_layers * self.kv_size * element_size

    def with_layers(self, num_layers: int) -> "ModelShape":
        """The same shape with only the first num_layers layers (quick checks of big models)."""
        return dataclasses.replace(self, num_layers=num_layers,
                                   moe_layers=tuple(i for i in self.moe_layers if i < num_layers))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["moe_layers"] = list(self.moe_layers)
        return d

    @classmethod
    def from_hf_config(cls, source) -> "ModelShape":
        """From a Hugging Face Qwen3-MoE config (dict, config.json path or model directory)."""
        spec = qwen3_moe_spec(source)
        cfg = load_hf_config(source)
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
        if rope_type != "default":
            raise HFConfigError(f"the decode path supports RoPE type 'default' (no scaling), this config has "
                                f"{rope_type!r}")
        theta = rope.get("rope_theta") if isinstance(rope, dict) else None
        theta = theta if theta is not None else cfg.get("rope_theta", 10000.0)
        return cls(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, num_layers=spec.num_hidden_layers,
                   num_heads=spec.num_attention_heads, num_kv_heads=spec.num_key_value_heads, head_dim=spec.head_dim,
                   moe_intermediate_size=spec.moe_intermediate_size, num_experts=spec.num_experts, top_k=spec.top_k,
                   norm_topk_prob=spec.norm_topk_prob, intermediate_size=spec.intermediate_size,
                   moe_layers=tuple(spec.moe_layers), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                   rope_theta=float(theta), tie_word_embeddings=spec.tie_word_embeddings,
                   max_position_embeddings=spec.max_position_embeddings or 40960)

    def to_hf_config_dict(self) -> Dict[str, Any]:
        """The config.json fields of a transformers Qwen3MoeConfig with this shape."""
        return {
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "moe_intermediate_size": self.moe_intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "num_experts": self.num_experts, "num_experts_per_tok": self.top_k,
            "norm_topk_prob": self.norm_topk_prob, "decoder_sparse_step": 1,
            "mlp_only_layers": [i for i in range(self.num_layers) if not self.is_moe(i)],
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "attention_bias": False, "hidden_act": "silu",
        }


#: Qwen3-30B-A3B (Hugging Face Qwen/Qwen3-30B-A3B config.json; tests/data/qwen3-30b-a3b).
QWEN3_30B_A3B = ModelShape(vocab_size=151936, hidden_size=2048, num_layers=48, num_heads=32, num_kv_heads=4,
                           head_dim=128, moe_intermediate_size=768, num_experts=128, top_k=8, norm_topk_prob=True,
                           intermediate_size=6144, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False)

SHAPES: Dict[str, ModelShape] = {"qwen3-30b-a3b": QWEN3_30B_A3B}


def get_shape(name: str) -> ModelShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown model shape {name!r}; choose one of: {', '.join(SHAPES)}") from None
