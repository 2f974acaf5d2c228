"""Fused decode kernels (Triton) for the small operations between the GEMMs.

At decode sizes these operations move a few kilobytes each, so their cost is the launch, not
the bytes: in plain PyTorch an RMSNorm is ~6 kernels and q/k norm + RoPE + the cache write
~30, which over 48 layers is thousands of launches per token, milliseconds even inside a CUDA
graph. Two kernels replace them, with the rounding of ops.py (the reference they are tested
against):
  add_rms_norm        residual += delta (rounded to the activation dtype, in place), then
                      RMSNorm of the sum: one program per token
  qk_norm_rope_cache  per-head RMSNorm of q and k, RoPE on both, k and v written into the
                      KV cache at the slot cache_index holds (read on the device, so the
                      captured graph serves every step): one program per (token, head)
Each launcher's Triton function (add_rms_norm_kernel, qk_norm_rope_cache_kernel) is public for
compile checks without a GPU (tests/test_decode_fused_cpu.py).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@triton.jit
def add_rms_norm_kernel(x_ptr, delta_ptr, weight_ptr, out_ptr, stride_x, stride_delta, stride_out, eps,
                         N: tl.constexpr, BLOCK: tl.constexpr, HAS_DELTA: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    in_row = cols < N
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + row * stride_x + cols, mask=in_row, other=0.0).to(tl.float32)
    if HAS_DELTA:
        delta = tl.load(delta_ptr + row * stride_delta + cols, mask=in_row, other=0.0).to(tl.float32)
        total = (x + delta).to(dtype)  # the residual stream is kept in the activation dtype
        tl.store(x_ptr + row * stride_x + cols, total, mask=in_row)
        x = total.to(tl.float32)
    variance = tl.sum(x * x, axis=0) / N
    normed = (x * tl.rsqrt(variance + eps)).to(dtype).to(tl.float32)
    weight = tl.load(weight_ptr + cols, mask=in_row, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (weight * normed).to(dtype), mask=in_row)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x += delta in place (x, delta [T, N]); returns RMSNorm(x) * weight as a new [T, N]."""
    return _norm(x, delta, weight, eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _norm(x, None, weight, eps)


def _norm(x, delta, weight, eps):
    if x.dim() != 2 or x.stride(1) != 1 or (delta is not None and (delta.shape != x.shape or delta.stride(1) != 1)):
        raise ValueError(f"x and delta must be [T, N] with unit stride in dim 1, got {tuple(x.shape)} "
                         f"{None if delta is None else tuple(delta.shape)}")
    T, N = x.shape
    out = torch.empty_like(x)
    block = _next_pow2(N)
    add_rms_norm_kernel[(T,)](x, x if delta is None else delta, weight, out, x.stride(0),
                               0 if delta is None else delta.stride(0), out.stride(0), eps, N=N, BLOCK=block,
                               HAS_DELTA=delta is not None, num_warps=4 if block <= 2048 else 8)
    return out


@triton.jit
def _norm_rope_store(src, weight_ptr, cos_row, sin_row, dst, eps, HALF: tl.constexpr, HALF_BLOCK: tl.constexpr):
    """RMSNorm one head (halves x1, x2), rotate it, store it at dst; every product rounds to the
    destination dtype as transformers' bf16 arithmetic does."""
    dtype = dst.dtype.element_ty
    d = tl.arange(0, HALF_BLOCK)
    m = d < HALF
    x1 = tl.load(src + d, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + d, mask=m, other=0.0).to(tl.float32)
    r = tl.rsqrt((tl.sum(x1 * x1, axis=0) + tl.sum(x2 * x2, axis=0)) / (2 * HALF) + eps)
    w1 = tl.load(weight_ptr + d, mask=m, other=0.0).to(tl.float32)
    w2 = tl.load(weight_ptr + HALF + d, mask=m, other=0.0).to(tl.float32)
    n1 = (w1 * (x1 * r).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    n2 = (w2 * (x2 * r).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    c1 = tl.load(cos_row + d, mask=m, other=0.0).to(tl.float32)
    c2 = tl.load(cos_row + HALF + d, mask=m, other=0.0).to(tl.float32)
    s1 = tl.load(sin_row + d, mask=m, other=0.0).to(tl.float32)
    s2 = tl.load(sin_row + HALF + d, mask=m, other=0.0).to(tl.float32)
    # x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1)
    o1 = (n1 * c1).to(dtype).to(tl.float32) + (-n2 * s1).to(dtype).to(tl.float32)
    o2 = (n2 * c2).to(dtype).to(tl.float32) + (n1 * s2).to(dtype).to(tl.float32)
    tl.store(dst + d, o1.to(dtype), mask=m)
    tl.store(dst + HALF + d, o2.to(dtype), mask=m)


@triton.jit
def qk_norm_rope_cache_kernel(qkv_ptr, q_norm_ptr, k_norm_ptr, cos_ptr, sin_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
                               cache_index_ptr, stride_qkv, stride_cos, stride_cb, stride_ch, stride_cs, eps,
                               NUM_HEADS: tl.constexpr, NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                               HALF_BLOCK: tl.constexpr):
    b = tl.program_id(0)
    head = tl.program_id(1)  # q heads, then k heads, then v heads: the column order of qkv
    HALF: tl.constexpr = HEAD_DIM // 2
    src = qkv_ptr + b * stride_qkv + head * HEAD_DIM
    cos_row = cos_ptr + b * stride_cos
    sin_row = sin_ptr + b * stride_cos
    if head < NUM_HEADS:
        _norm_rope_store(src, q_norm_ptr, cos_row, sin_row, q_out_ptr + (b * NUM_HEADS + head) * HEAD_DIM, eps,
                         HALF, HALF_BLOCK)
    else:
        slot = tl.load(cache_index_ptr)
        if head < NUM_HEADS + NUM_KV_HEADS:
            kv = head - NUM_HEADS
            dst = k_cache_ptr + b * stride_cb + kv * stride_ch + slot * stride_cs
            _norm_rope_store(src, k_norm_ptr, cos_row, sin_row, dst, eps, HALF, HALF_BLOCK)
        else:
            kv = head - NUM_HEADS - NUM_KV_HEADS
            dst = v_cache_ptr + b * stride_cb + kv * stride_ch + slot * stride_cs
            d = tl.arange(0, 2 * HALF_BLOCK)
            m = d < HEAD_DIM
            tl.store(dst + d, tl.load(src + d, mask=m, other=0.0), mask=m)


def qk_norm_rope_cache(qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, cos: torch.Tensor,
                       sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_index: torch.Tensor,
                       num_heads: int, num_kv_heads: int, eps: float) -> torch.Tensor:
    """qkv [B, (Hq + 2 Hkv) D] of one decode token per row; cos, sin [B, D]; k_cache, v_cache
    [B, Hkv, S, D] (one layer); cache_index int64 [1]. Writes normed, rotated k and raw v at
    that slot of each row; returns normed, rotated q [B, Hq, D]."""
    B = qkv.shape[0]
    D = q_norm.shape[0]
    _check_decode_inputs(qkv, cos, sin, k_cache, v_cache, cache_index, num_heads, num_kv_heads, D)
    q = torch.empty((B, num_heads, D), dtype=qkv.dtype, device=qkv.device)
    qk_norm_rope_cache_kernel[(B, num_heads + 2 * num_kv_heads)](
        qkv, q_norm, k_norm, cos, sin, q, k_cache, v_cache, cache_index, qkv.stride(0), cos.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), eps, NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=D, HALF_BLOCK=_next_pow2(D // 2), num_warps=1)
    return q


def _check_decode_inputs(qkv, cos, sin, k_cache, v_cache, cache_index, num_heads, num_kv_heads, D) -> None:
    B = qkv.shape[0]
    if qkv.dim() != 2 or qkv.shape[1] != (num_heads + 2 * num_kv_heads) * D or qkv.stride(1) != 1:
        raise ValueError(f"qkv must be [B, (Hq + 2 Hkv) * D = {(num_heads + 2 * num_kv_heads) * D}] with unit stride, "
                         f"got {tuple(qkv.shape)}")
    if cos.shape != (B, D) or sin.shape != (B, D) or cos.stride() != sin.stride() or cos.stride(1) != 1:
        raise ValueError(f"cos and sin must both be [B={B}, D={D}] with the same strides, got {tuple(cos.shape)} "
                         f"and {tuple(sin.shape)}")
    want: Tuple[int, ...] = (B, num_kv_heads)
    if k_cache.shape[:2] != want or k_cache.shape[3] != D or k_cache.stride(3) != 1 or v_cache.stride() != k_cache.stride() \
            or v_cache.shape != k_cache.shape:
        raise ValueError(f"k_cache and v_cache must be [B={B}, Hkv={num_kv_heads}, S, D={D}] with equal strides, got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if cache_index.dtype != torch.int64 or cache_index.numel() != 1:
        raise ValueError(f"cache_index must be one int64 (the slot to write), got {cache_index.dtype} "
                         f"{tuple(cache_index.shape)}")
