"""A compact Qwen3-MoE decoder for serving decode: the forward pass as a few plain functions
over the weights (gpt-fast style), with OEA routing and our MoE kernel in every MoE layer.

Why our own module rather than transformers' Qwen3MoeForCausalLM: a decode step must be one
static sequence of kernels for CUDA-graph capture, and transformers' step is built for
generality (dynamic cache objects, mask construction, experts dispatch and Python per layer),
which keeps it far from the memory floor even where it can be captured. Here the per-layer
decode work is: fused add+RMSNorm, one QKV GEMM, fused q/k norm + RoPE + cache write,
attention over the static cache, the output GEMM, fused add+RMSNorm, the router GEMM,
`oea_trt.route(logits, config, signal=True)` and `oea_trt.moe_forward(x, experts, routing)`.
The arithmetic follows transformers' Qwen3-MoE (ops.py) so logits agree within bf16 rounding.

Prefill runs the same layers over [B, L] with plain PyTorch ops (ops.py), routes its tokens
as context tokens (vanilla top-k, padding excluded) and writes the cache.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from oea_trt.decode import ops
from oea_trt.decode.cache import KVCache
from oea_trt.decode.shape import ModelShape
from oea_trt.decode.weights import ModelWeights
from oea_trt.moe import moe_forward
from oea_trt.moe.impls import IMPLS
from oea_trt.routing import CONTEXT, PADDING, ConfigError, OEAConfig, route

#: MoE implementations (oea_trt.moe_forward impl names) per phase; "auto" picks by device.
DECODE_MOE_IMPLS = ("auto", *IMPLS)

RoutingSpec = Union[None, OEAConfig, Sequence[OEAConfig], Mapping[int, OEAConfig]]


class DecodeModel:
    """shape + weights + one OEAConfig per MoE layer.

    routing: an OEAConfig for every MoE layer, {layer: OEAConfig}, a list (one per MoE layer),
        a RoutingPlan (its config_for_layer), or None (vanilla top-k: k0 = k).
    fused: decode with the Triton kernels of fused.py (default: on CUDA); False runs ops.py.
    decode_moe_impl / prefill_moe_impl: oea_trt.moe_forward's impl ("auto": our Triton kernel
        for decode and torch._grouped_mm for prefill on CUDA, the reference loop on the CPU).
    """

    def __init__(self, shape: ModelShape, weights: ModelWeights, routing: RoutingSpec = None, *,
                 fused: Optional[bool] = None, decode_moe_impl: str = "auto", prefill_moe_impl: str = "auto"):
        weights.check(shape)
        for name, impl in (("decode_moe_impl", decode_moe_impl), ("prefill_moe_impl", prefill_moe_impl)):
            if impl not in DECODE_MOE_IMPLS:
                raise ValueError(f"{name} must be one of {', '.join(DECODE_MOE_IMPLS)}, got {impl!r}")
        self.shape = shape
        self.weights = weights
        on_cuda = weights.device.type == "cuda"
        self.fused = on_cuda if fused is None else bool(fused)
        self.decode_moe_impl = decode_moe_impl if decode_moe_impl != "auto" else ("triton" if on_cuda else "loop")
        self.prefill_moe_impl = prefill_moe_impl if prefill_moe_impl != "auto" else ("grouped_mm" if on_cuda else "loop")
        self.inv_freq = ops.inv_frequencies(shape.head_dim, shape.rope_theta).to(weights.device)
        self.configs: Dict[int, OEAConfig] = {}
        self.set_routing(routing)
        #: observer(layer, hidden, router_logits, routing) after every routing call (hidden: the
        #: MoE layer's input), e.g. to record what was routed. Eager runs only: a CUDA graph would
        #: run the observer once, at capture.
        self.routing_observer: Optional[Callable[[int, torch.Tensor, torch.Tensor, object], None]] = None

    @property
    def device(self) -> torch.device:
        return self.weights.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    # ---- routing -----------------------------------------------------------------------------
    def set_routing(self, routing: RoutingSpec) -> None:
        """Route every MoE layer with the given configs from now on (graphs captured before keep
        the configs they were captured with)."""
        layers = self.shape.moe_layers
        if routing is None:
            configs = {i: OEAConfig.vanilla(self.shape.num_experts, self.shape.top_k,
                                            renormalize=self.shape.norm_topk_prob) for i in layers}
        elif isinstance(routing, OEAConfig):
            configs = {i: routing for i in layers}
        elif hasattr(routing, "config_for_layer"):  # a RoutingPlan
            configs = {i: routing.config_for_layer(i) for i in layers}
        elif isinstance(routing, Mapping):
            missing = sorted(set(layers) - set(routing))
            if missing:
                raise ConfigError(f"routing names no config for MoE layer(s) {missing}")
            configs = {i: routing[i] for i in layers}
        else:
            routing = list(routing)
            if len(routing) != len(layers):
                raise ConfigError(f"got {len(routing)} routing configs for {len(layers)} MoE layers")
            configs = dict(zip(layers, routing))
        for layer, cfg in configs.items():
            self._check_config(layer, cfg)
        self.configs = configs

    def _check_config(self, layer: int, cfg: OEAConfig) -> None:
        s = self.shape
        for field, want in (("num_experts", s.num_experts), ("top_k", s.top_k), ("renormalize", s.norm_topk_prob)):
            if getattr(cfg, field) != want:
                what = "norm_topk_prob" if field == "renormalize" else field
                raise ConfigError(f"layer {layer}: OEAConfig.{field}={getattr(cfg, field)!r} but the model's {what} "
                                  f"is {want!r}")

    # ---- decode ------------------------------------------------------------------------------
    def decode_logits(self, tokens: torch.Tensor, cache_index: torch.Tensor, pad_start: torch.Tensor,
                      cache: KVCache) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """One decode step: tokens [B] at cache slot cache_index ([1] int64, read on the device).
        Writes each layer's k/v at that slot. Returns (logits [B, V], num_active per MoE layer,
        int32 0-d tensors). No host synchronisation: capturable in a CUDA graph."""
        s, w = self.shape, self.weights
        positions = cache_index - pad_start
        cos, sin = ops.rope_cos_sin(positions, self.inv_freq, self.dtype)
        mask = ops.decode_key_mask(pad_start, cache_index, cache.capacity, self.dtype)
        x = F.embedding(tokens, w.embed)
        h = self._norm(x, w.layers[0].input_norm)
        active = []
        for i, lw in enumerate(w.layers):
            qkv = F.linear(h, lw.wqkv)
            k_cache, v_cache = cache.k[i], cache.v[i]
            if self.fused:
                from oea_trt.decode import fused

                q = fused.qk_norm_rope_cache(qkv, lw.q_norm, lw.k_norm, cos, sin, k_cache, v_cache, cache_index,
                                             s.num_heads, s.num_kv_heads, s.rms_norm_eps)
            else:
                q, k, v = ops.qk_norm_rope(qkv, lw.q_norm, lw.k_norm, cos, sin, s.num_heads, s.num_kv_heads,
                                           s.rms_norm_eps)
                k_cache.index_copy_(2, cache_index, k.unsqueeze(2))
                v_cache.index_copy_(2, cache_index, v.unsqueeze(2))
            attn = ops.grouped_decode_attention(q, k_cache, v_cache, mask)
            x, h = self._add_norm(x, F.linear(attn, lw.wo), lw.post_norm)
            if lw.is_moe:
                out, num_active = self._moe(i, lw, h, None, self.decode_moe_impl, decode=True)
                active.append(num_active)
            else:
                out = ops.swiglu(h, lw.mlp_w13, lw.mlp_w2)
            next_norm = w.layers[i + 1].input_norm if i + 1 < len(w.layers) else w.final_norm
            x, h = self._add_norm(x, out, next_norm)
        return F.linear(h, w.lm_head), active

    def _norm(self, x, weight):
        if self.fused:
            from oea_trt.decode import fused

            return fused.rms_norm(x, weight, self.shape.rms_norm_eps)
        return ops.rms_norm(x, weight, self.shape.rms_norm_eps)

    def _add_norm(self, x, delta, weight):
        """(x + delta, RMSNorm(x + delta)); the fused kernel updates x in place."""
        if self.fused:
            from oea_trt.decode import fused

            return x, fused.add_rms_norm(x, delta, weight, self.shape.rms_norm_eps)
        x = x + delta
        return x, ops.rms_norm(x, weight, self.shape.rms_norm_eps)

    def _moe(self, layer, lw, h, token_kind, impl, decode):
        router_logits = F.linear(h, lw.router)
        # signal: the one-launch MoE kernel that follows on this stream may start on the
        # routing's published active set (a no-op off CUDA or without a piggyback phase).
        routing = route(router_logits, self.configs[layer], token_kind, signal=decode and impl == "triton")
        if self.routing_observer is not None:
            self.routing_observer(layer, h, router_logits, routing)
        return moe_forward(h, lw.experts, routing, impl=impl), routing.num_active

    # ---- prefill -----------------------------------------------------------------------------
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                cache: KVCache) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Run left-padded prompts input_ids [B, L] (attention_mask [B, L], 1 = real token) and
        write their keys/values into cache slots [0, L). Returns (logits of the last position
        [B, V], num_active per MoE layer for the prefill batch)."""
        s, w = self.shape, self.weights
        B, L = input_ids.shape
        if L > cache.capacity or B != cache.batch:
            raise ValueError(f"prompts [{B}, {L}] do not fit a cache of batch {cache.batch} and capacity "
                             f"{cache.capacity}")
        real = attention_mask.bool()
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cos, sin = ops.rope_cos_sin(positions, self.inv_freq, self.dtype)
        mask = ops.prefill_mask(attention_mask)
        kinds = torch.where(real, CONTEXT, PADDING).to(torch.int32).reshape(-1)
        x = F.embedding(input_ids, w.embed)
        active = []
        for i, lw in enumerate(w.layers):
            h = ops.rms_norm(x, lw.input_norm, s.rms_norm_eps)
            q, k, v = ops.qk_norm_rope(F.linear(h, lw.wqkv), lw.q_norm, lw.k_norm, cos, sin, s.num_heads,
                                       s.num_kv_heads, s.rms_norm_eps)
            cache.k[i, :, :, :L] = k.transpose(1, 2)
            cache.v[i, :, :, :L] = v.transpose(1, 2)
            x = x + F.linear(ops.prefill_attention(q, k, v, mask), lw.wo)
            h = ops.rms_norm(x, lw.post_norm, s.rms_norm_eps)
            if lw.is_moe:
                out, num_active = self._moe(i, lw, h.reshape(B * L, -1), kinds, self.prefill_moe_impl, decode=False)
                out = out.view(B, L, -1)
                active.append(num_active)
            else:
                out = ops.swiglu(h, lw.mlp_w13, lw.mlp_w2)
            x = x + out
        h = ops.rms_norm(x[:, -1], w.final_norm, s.rms_norm_eps)
        return F.linear(h, w.lm_head), active
