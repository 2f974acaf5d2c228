"""The decoder's weights in the layout the decode path reads, and the bridge to transformers.

Layout: q, k and v projections fused into one [(Hq + 2 Hkv) D, H] matrix (one GEMM per layer
at decode); experts as oea_trt.moe.ExpertWeights (w13 [E, 2I, H], w2 [E, H, I]), which is
exactly transformers 5.x's gate_up_proj / down_proj, so expert weights are shared with a
transformers model, never copied: from_hf() takes a loaded model's tensors, to_hf() builds a
transformers model around these tensors (the baseline of the decode benchmark runs on the very
bytes ours does).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from oea_trt.decode.shape import ModelShape
from oea_trt.moe import ExpertWeights


@dataclasses.dataclass
class LayerWeights:
    input_norm: torch.Tensor                 # [H]
    post_norm: torch.Tensor                  # [H]
    wqkv: torch.Tensor                       # [(Hq + 2 Hkv) D, H]
    q_norm: torch.Tensor                     # [D]
    k_norm: torch.Tensor                     # [D]
    wo: torch.Tensor                         # [H, Hq D]
    router: Optional[torch.Tensor] = None    # [E, H] (MoE layers)
    experts: Optional[ExpertWeights] = None  # (MoE layers)
    mlp_w13: Optional[torch.Tensor] = None   # [2I, H] gate rows then up rows (dense layers)
    mlp_w2: Optional[torch.Tensor] = None    # [H, I] (dense layers)

    @property
    def is_moe(self) -> bool:
        return self.experts is not None


@dataclasses.dataclass
class ModelWeights:
    embed: torch.Tensor           # [V, H]
    layers: List[LayerWeights]
    final_norm: torch.Tensor      # [H]
    lm_head: torch.Tensor         # [V, H] (the embedding itself when tied)

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def check(self, shape: ModelShape) -> None:
        """Every tensor has the shape `shape` says (ValueError naming the first that does not)."""
        H, D, V = shape.hidden_size, shape.head_dim, shape.vocab_size
        want = {"embed": (V, H), "final_norm": (H,), "lm_head": (V, H)}
        for name, dims in want.items():
            _expect(getattr(self, name), name, dims)
        if len(self.layers) != shape.num_layers:
            raise ValueError(f"{len(self.layers)} layers of weights for a {shape.num_layers}-layer shape")
        for i, lw in enumerate(self.layers):
            for name, dims in (("input_norm", (H,)), ("post_norm", (H,)), ("wqkv", (shape.qkv_size, H)),
                               ("q_norm", (D,)), ("k_norm", (D,)), ("wo", (H, shape.q_size))):
                _expect(getattr(lw, name), f"layers[{i}].{name}", dims)
            if shape.is_moe(i):
                if lw.experts is None or lw.router is None:
                    raise ValueError(f"layer {i} is a MoE layer but has no experts/router weights")
                _expect(lw.router, f"layers[{i}].router", (shape.num_experts, H))
                _expect(lw.experts.w13, f"layers[{i}].experts.w13",
                        (shape.num_experts, 2 * shape.moe_intermediate_size, H))
            elif lw.mlp_w13 is None or lw.mlp_w2 is None:
                raise ValueError(f"layer {i} is a dense layer but has no mlp_w13/mlp_w2 weights")


def _expect(tensor: torch.Tensor, name: str, dims: tuple) -> None:
    if tuple(tensor.shape) != tuple(dims):
        raise ValueError(f"{name} must have shape {list(dims)}, got {list(tensor.shape)}")


# ---- transformers -> ours ------------------------------------------------------------------


def from_hf(model) -> tuple:
    """(ModelShape, ModelWeights) of a transformers Qwen3MoeForCausalLM. Expert, router, norm and
    embedding tensors are the model's own (shared storage); q/k/v are concatenated (a copy of
    the attention input projections only)."""
    shape = ModelShape.from_hf_config(model.config.to_dict())
    inner = model.model
    layers = []
    for i, layer in enumerate(inner.layers):
        attn = layer.self_attn
        wqkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dim=0).detach()
        lw = LayerWeights(input_norm=layer.input_layernorm.weight.detach(),
                          post_norm=layer.post_attention_layernorm.weight.detach(), wqkv=wqkv,
                          q_norm=attn.q_norm.weight.detach(), k_norm=attn.k_norm.weight.detach(),
                          wo=attn.o_proj.weight.detach())
        mlp = layer.mlp
        if shape.is_moe(i):
            lw.router, lw.experts = _hf_router(mlp), _hf_experts(mlp)
        else:
            lw.mlp_w13 = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0).detach()
            lw.mlp_w2 = mlp.down_proj.weight.detach()
        layers.append(lw)
    weights = ModelWeights(embed=inner.embed_tokens.weight.detach(), layers=layers,
                           final_norm=inner.norm.weight.detach(), lm_head=model.lm_head.weight.detach())
    weights.check(shape)
    return shape, weights


def _hf_router(block) -> torch.Tensor:
    return block.gate.weight.detach()


def _hf_experts(block) -> ExpertWeights:
    experts = block.experts
    if hasattr(experts, "gate_up_proj"):  # transformers 5.x: [E, 2I, H] and [E, H, I], our layout
        return ExpertWeights(experts.gate_up_proj.detach(), experts.down_proj.detach())
    # transformers 4.x: a ModuleList of MLPs; stacking copies the experts once.
    gate = torch.stack([e.gate_proj.weight for e in experts]).detach()
    up = torch.stack([e.up_proj.weight for e in experts]).detach()
    down = torch.stack([e.down_proj.weight for e in experts]).detach()
    return ExpertWeights.from_gate_up_down(gate, up, down)


# ---- ours -> transformers ------------------------------------------------------------------


def to_hf(shape: ModelShape, weights: ModelWeights, experts_implementation: Optional[str] = None):
    """A transformers Qwen3MoeForCausalLM (eval mode) whose parameters ARE these tensors (no copy;
    q/k/v are row views of wqkv). Needs transformers 5.x (experts stored as [E, 2I, H] / [E, H, I]).
    experts_implementation: passed to set_experts_implementation (None: transformers' default for
    the device, as from_pretrained would pick)."""
    from torch import nn
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    fields = {k: v for k, v in shape.to_hf_config_dict().items() if k not in ("architectures", "model_type")}
    config = Qwen3MoeConfig(**fields)
    with torch.device("meta"):
        model = Qwen3MoeForCausalLM(config)
    inner = model.model

    def put(module, name, tensor):
        module._parameters[name] = nn.Parameter(tensor, requires_grad=False)

    put(inner.embed_tokens, "weight", weights.embed)
    put(inner.norm, "weight", weights.final_norm)
    put(model.lm_head, "weight", weights.lm_head)
    q, kv = shape.q_size, shape.kv_size
    for i, (layer, lw) in enumerate(zip(inner.layers, weights.layers)):
        attn = layer.self_attn
        put(layer.input_layernorm, "weight", lw.input_norm)
        put(layer.post_attention_layernorm, "weight", lw.post_norm)
        put(attn.q_proj, "weight", lw.wqkv[:q])
        put(attn.k_proj, "weight", lw.wqkv[q:q + kv])
        put(attn.v_proj, "weight", lw.wqkv[q + kv:])
        put(attn.q_norm, "weight", lw.q_norm)
        put(attn.k_norm, "weight", lw.k_norm)
        put(attn.o_proj, "weight", lw.wo)
        mlp = layer.mlp
        if shape.is_moe(i):
            if not hasattr(mlp.experts, "gate_up_proj"):
                raise RuntimeError(f"transformers {__import__('transformers').__version__} stores experts as "
                                   "separate modules; to_hf needs transformers 5.x (gate_up_proj [E, 2I, H])")
            put(mlp.gate, "weight", lw.router)
            put(mlp.experts, "gate_up_proj", lw.experts.w13)
            put(mlp.experts, "down_proj", lw.experts.w2)
        else:
            I = lw.mlp_w2.shape[1]
            put(mlp.gate_proj, "weight", lw.mlp_w13[:I])
            put(mlp.up_proj, "weight", lw.mlp_w13[I:])
            put(mlp.down_proj, "weight", lw.mlp_w2)
    # Non-persistent buffers (RoPE's inverse frequencies) are made on the CPU, as from_pretrained does.
    inner.rotary_emb = type(inner.rotary_emb)(config=config).to(weights.device)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"to_hf left tensors on the meta device: {left[:5]}")
    if experts_implementation is not None:
        model.set_experts_implementation(experts_implementation)
    elif hasattr(model, "get_correct_experts_implementation"):  # what from_pretrained would choose here
        try:
            model.set_experts_implementation(model.get_correct_experts_implementation(None))
        except (ValueError, ImportError, AttributeError):
            pass
    return model.eval()
