"""The decoder's small operations in plain PyTorch, rounded exactly where transformers'
Qwen3-MoE rounds: these are the prefill path, the CPU path and the reference the fused decode
kernels (fused.py) are tested against.

RMSNorm normalises in float32, rounds to the activation dtype, then multiplies by the weight
in that dtype; RoPE's cos/sin are computed in float32 and rounded to the activation dtype
before the rotation, whose products and sum each round (transformers' apply_rotary_pos_emb).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def inv_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """float32 [head_dim / 2], as transformers' default RoPE computes them (on the CPU)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos, sin [..., head_dim] for integer positions [...], rounded to dtype."""
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., heads, head_dim]; cos, sin [..., head_dim] (broadcast over heads)."""
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return x * cos + rotate_half(x) * sin


def split_qkv(qkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int):
    """qkv [..., (Hq + 2 Hkv) * D] -> q [..., Hq, D], k [..., Hkv, D], v [..., Hkv, D]."""
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    q, k, v = qkv.split((q_size, kv_size, kv_size), dim=-1)
    lead = qkv.shape[:-1]
    return (q.reshape(*lead, num_heads, head_dim), k.reshape(*lead, num_kv_heads, head_dim),
            v.reshape(*lead, num_kv_heads, head_dim))


def qk_norm_rope(qkv, q_norm, k_norm, cos, sin, num_heads, num_kv_heads, eps):
    """Per-head RMSNorm of q and k (Qwen3's q_norm / k_norm), then RoPE on both; v untouched."""
    head_dim = q_norm.shape[0]
    q, k, v = split_qkv(qkv, num_heads, num_kv_heads, head_dim)
    q = apply_rope(rms_norm(q, q_norm, eps), cos, sin)
    k = apply_rope(rms_norm(k, k_norm, eps), cos, sin)
    return q, k, v


def swiglu(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Dense SwiGLU MLP: w13 [2I, H] (gate rows, then up rows), w2 [H, I]."""
    gate, up = F.linear(x, w13).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w2)


def decode_key_mask(pad_start: torch.Tensor, cache_index: torch.Tensor, capacity: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [B, 1, 1, capacity]: 0 where row b may attend to cache slot s (its prompt
    starts at pad_start[b] and slots up to cache_index are written), -inf elsewhere."""
    slots = torch.arange(capacity, device=pad_start.device)
    valid = (slots[None, :] >= pad_start[:, None]) & (slots[None, :] <= cache_index)
    zero = torch.zeros((), dtype=dtype, device=pad_start.device)
    return torch.where(valid, zero, torch.full((), float("-inf"), dtype=dtype, device=pad_start.device))[:, None, None, :]


def prefill_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """bool [B, 1, L, L]: causal over real (mask 1) keys. A padding query also sees itself, so
    its row is never all-masked (SDPA would give NaN, and NaN keys or values would poison the
    cache even under a zero attention weight)."""
    B, L = attention_mask.shape
    device = attention_mask.device
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    keys = attention_mask.bool()[:, None, :]
    diag = torch.eye(L, dtype=torch.bool, device=device)
    return ((causal & keys) | diag)[:, None]


def grouped_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                             mask: torch.Tensor) -> torch.Tensor:
    """One decode token per row against its cache, grouped-query attention without copying the
    cache: the G query heads that share a KV head are that head's G 'query positions'.
    q [B, Hq, D]; k_cache, v_cache [B, Hkv, S, D]; mask [B, 1, 1, S] additive. -> [B, Hq * D]."""
    B, Hq, D = q.shape
    Hkv = k_cache.shape[1]
    out = F.scaled_dot_product_attention(q.view(B, Hkv, Hq // Hkv, D), k_cache, v_cache, attn_mask=mask,
                                         scale=D ** -0.5)
    return out.reshape(B, Hq * D)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q [B, L, Hq, D], k/v [B, L, Hkv, D], mask bool [B, 1, L, L] -> [B, L, Hq * D]."""
    B, L, Hq, D = q.shape
    group = Hq // k.shape[2]
    k = k.transpose(1, 2).repeat_interleave(group, dim=1)
    v = v.transpose(1, 2).repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, scale=D ** -0.5)
    return out.transpose(1, 2).reshape(B, L, Hq * D)
