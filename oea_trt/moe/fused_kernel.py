"""The whole decode MoE layer in ONE Triton launch: gate/up, SiLU*mul, down, routing weights
and the per-token sum, for each active expert's weights read from HBM once.

Why one launch: at decode sizes the three-launch kernel (triton_kernel.py) pays ~13 us per layer
that does not depend on T (measured on the H200: 29.0 us at T=8 vs a 17.6 us floor): two kernel
boundaries inside the graph (each a drain, a launch and a pipeline ramp) plus a combine kernel.
That fixed cost is what keeps OEA's k0=3 at 0.60 of vanilla instead of T's 0.50.

Work item = (a-th active expert, chunk of BLOCK_I rows of the intermediate dim). Persistent
programs (one wave, as in triton_kernel.py) walk the items; consecutive items are adjacent
chunks of one expert. For an item the program
  1. finds the expert's tokens in expert_ids (no sort; <= BLOCK_M tokens per pass),
  2. streams the chunk's gate and up rows once: act = silu(x Wg^T) * (x Wu^T)  [tokens, BLOCK_I],
     rounded to the weight dtype (as the reference model does), kept in registers,
  3. streams the chunk's down columns once: act @ Wd[:, chunk]^T * routing weight, and adds the
     fp32 partial [tokens, H] into a per-call accumulator with atomics,
  4. counts the item done for each of its tokens (a per-token counter, acq_rel). The program
     that completes a token's last item (distinct experts of the token x chunks) reads the
     token's accumulator row, writes the output row in the activation dtype, and zeroes the row
     and the counter for the next call.
So the accumulator is zero on entry and on exit of every call with no memset and no extra
launch. Program 0 also writes the zero rows of tokens that route to no valid expert.

The accumulator lives in a workspace cached per (device, hidden size) and kept forever (a CUDA
graph captured with it must find it alive). Calls that share a device must be stream-ordered
(one stream, or graphs replayed on one stream): two concurrent calls would share the workspace.

Determinism: fp32 atomics add an item's partial in whatever order programs finish, so results
can differ in the last bits from call to call (bf16 outputs rarely differ by one ulp). The
three-launch kernel (impl "triton") sums in slot order and is bit-reproducible.

Down-projection layout: w2 is [E, H, I] as Hugging Face stores down_proj (an item reads rows
of BLOCK_I contiguous elements, BLOCK_I*2 bytes each), or the view w2_t.transpose(1, 2) of a
contiguous [E, I, H] copy (an item reads BLOCK_I*H contiguous elements). Both are compiled from
the same code; the strides are compile-time constants.

Programmatic dependent launch (config.pdl, sm_90+): the kernel is launched so that it may start
while the previous kernel on the stream drains; its first instruction waits for that kernel's
memory (griddepcontrol.wait), so nothing is read early.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Tuple

import torch
import triton
import triton.language as tl

from oea_trt.moe.triton.three_launch import _active_experts, _fit, _launch_persistent, _next_pow2, _nth_active

#: Shared memory a kernel's pipelines may use (H100/H200 allow 227 KB per block).
SMEM_BUDGET = 192 * 1024


@dataclasses.dataclass(frozen=True)
class FusedConfig:
    """block_m: token rows per pass (>= 16, raised to cover the batch up to 64). block_i: rows of
    the intermediate dim per work item (the down dot's K, >= 16): narrow chunks give more
    programs when few experts are active, wide ones fewer fp32 atomics. block_k: hidden columns
    per gate/up step. block_h: hidden rows per down step. w2_layout: "hi" reads w2 [E, H, I]
    as given, "ih" the [E, I, H] copy (ExpertWeights.w2_t) when there is one."""

    block_m: int = 16
    block_i: int = 32
    block_k: int = 128
    block_h: int = 128
    warps: int = 4
    stages: int = 4
    pdl: bool = False
    w2_layout: str = "hi"
    max_programs: Optional[int] = None

    def replace(self, **changes) -> "FusedConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_config(num_tokens: int, hidden: int, inter: int, top_k: int, num_experts: int) -> FusedConfig:
    """Enough work items for two programs per SM (H200: 132 SMs) when few experts are active,
    wider chunks (fewer atomics) when many are. Register use (ptxas, sm_90) decides the rest:
    16-row token tiles take 32-row chunks at most and 4 warps; wider token tiles 8 warps
    (scripts/check_moe_kernels.py checks that none of these spills)."""
    max_active = min(num_experts, max(1, num_tokens) * top_k)
    block_m = min(64, max(16, _next_pow2(num_tokens)))
    block_i = 32
    while block_i > 16 and max_active * (inter // block_i) < 2 * 132:
        block_i //= 2
    return FusedConfig(block_m=block_m, block_i=block_i, block_k=256 if block_i == 16 else 128,
                       warps=4 if block_m == 16 else 8)


def fitted(config: FusedConfig, num_tokens: int, hidden: int, inter: int) -> FusedConfig:
    """config with block_m covering the batch (<= 64), tiles that divide the shape, and pipeline
    stages that fit in shared memory (bf16 tiles of both loops)."""
    block_m = max(config.block_m, min(64, max(16, _next_pow2(num_tokens))))
    cfg = config.replace(block_m=block_m,
                         block_i=_fit(config.block_i, inter, "moe_intermediate_size"),
                         block_k=_fit(config.block_k, hidden, "hidden_size"),
                         block_h=_fit(config.block_h, hidden, "hidden_size"))
    per_stage = 2 * ((cfg.block_m + 2 * cfg.block_i) * cfg.block_k + cfg.block_i * cfg.block_h)
    return cfg.replace(stages=max(2, min(cfg.stages, SMEM_BUDGET // per_stage)))


def finish_block(hidden: int) -> int:
    """Hidden elements per step when a token's row is finished (a divisor of H, <= 512: wider
    steps cost registers that the streaming loops need)."""
    return _fit(min(512, _next_pow2(hidden)), hidden, "hidden_size")


# ---- device code -------------------------------------------------------------------------


@triton.jit
def _token_block(expert_ids_ptr, tok0, num_tokens, E: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
                 BLOCK_M: tl.constexpr):
    """Tokens tok0 .. tok0+BLOCK_M-1: (token index, their ids [BLOCK_M, K_PAD] (-1 past the end),
    number of distinct valid experts per token)."""
    toks = tok0 + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, K_PAD)
    in_range = (toks[:, None] < num_tokens) & (slots[None, :] < K)
    ids = tl.load(expert_ids_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=-1)
    valid = in_range & (ids >= 0) & (ids < E)
    # A slot repeating an earlier slot's expert (the router's "top1" fill) is not a new expert.
    same = ids[:, :, None] == ids[:, None, :]
    earlier = slots[None, None, :] < slots[None, :, None]
    repeat = tl.max((same & earlier).to(tl.int32), axis=2) > 0
    distinct = tl.sum((valid & ~repeat).to(tl.int32), axis=1)
    return toks, ids, distinct


@triton.jit
def _write_rows(acc_ptr, out_ptr, count_ptr, stride_out, tok0, rows, H: tl.constexpr, FROM_ACC: tl.constexpr,
                BLOCK_M: tl.constexpr, FINISH_H: tl.constexpr):
    """For each token tok0 + j with rows[j]: its output row = its accumulator row in the output
    dtype (FROM_ACC; the accumulator row and counter are zeroed for the next call) or zeros.
    One token at a time, across all threads: usually one token per call of this."""
    m = tl.arange(0, BLOCK_M)
    hh = tl.arange(0, FINISH_H)
    flags = rows.to(tl.int32)
    for j in range(0, BLOCK_M):
        if tl.sum(tl.where(m == j, flags, 0), axis=0) > 0:
            t = tl.cast(tok0 + j, tl.int64)
            for h0 in range(0, H, FINISH_H):
                if FROM_ACC:
                    # .cg: from L2, where the other programs' atomics were performed.
                    v = tl.load(acc_ptr + t * H + h0 + hh, cache_modifier=".cg")
                    tl.store(acc_ptr + t * H + h0 + hh, tl.zeros((FINISH_H,), dtype=tl.float32))
                else:
                    v = tl.zeros((FINISH_H,), dtype=tl.float32)
                tl.store(out_ptr + t * stride_out + h0 + hh, v.to(out_ptr.dtype.element_ty))
            if FROM_ACC:
                tl.store(count_ptr + t, 0)


@triton.jit(do_not_specialize=["num_tokens"])
def _fused_moe_kernel(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, out_ptr, acc_ptr,
                      count_ptr, num_tokens, stride_x, stride_out,
                      H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                      K: tl.constexpr, K_PAD: tl.constexpr, W2_STRIDE_H: tl.constexpr, W2_STRIDE_I: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_K: tl.constexpr,
                      BLOCK_H: tl.constexpr, FINISH_H: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL:
        # Launched before the previous kernel finished: wait for its memory before reading any.
        tl.extra.cuda.gdc_wait()
    N_CHUNKS: tl.constexpr = I // BLOCK_I
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    kk = tl.arange(0, BLOCK_K)
    ii = tl.arange(0, BLOCK_I)
    hh = tl.arange(0, BLOCK_H)
    slots = tl.arange(0, K_PAD)

    if tl.program_id(0) == 0:  # tokens with no valid expert get zeros (no item will touch them)
        for tok0 in range(0, num_tokens, BLOCK_M):
            toks, ids, distinct = _token_block(expert_ids_ptr, tok0, num_tokens, E, K, K_PAD, BLOCK_M)
            empty = (toks < num_tokens) & (distinct == 0)
            if tl.max(empty.to(tl.int32), axis=0) > 0:
                _write_rows(acc_ptr, out_ptr, count_ptr, stride_out, tok0, empty, H, False, BLOCK_M, FINISH_H)

    for w in range(tl.program_id(0), num_active * N_CHUNKS, tl.num_programs(0)):
        expert = _nth_active(rank, active, w // N_CHUNKS, E_PAD).to(tl.int64)
        i = (w % N_CHUNKS) * BLOCK_I + ii
        for tok0 in range(0, num_tokens, BLOCK_M):  # one pass for a decode batch (<= BLOCK_M)
            toks = tok0 + tl.arange(0, BLOCK_M)
            in_range = (toks[:, None] < num_tokens) & (slots[None, :] < K)
            hit = (tl.load(expert_ids_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=-1) == expert)
            routed = tl.max(hit.to(tl.int32), axis=1) > 0
            if tl.max(routed.to(tl.int32), axis=0) > 0:
                # The expert's weight for the token, summed over the slots that name it.
                scale = tl.sum(tl.load(weights_ptr + toks[:, None] * K + slots[None, :], mask=hit, other=0.0), axis=1)
                x_rows = x_ptr + toks[:, None].to(tl.int64) * stride_x + kk[None, :]
                w_gate = w13_ptr + expert * (2 * I * H) + i[:, None] * H + kk[None, :]  # [BLOCK_I, BLOCK_K]
                acc_gate = tl.zeros((BLOCK_M, BLOCK_I), dtype=tl.float32)
                acc_up = tl.zeros((BLOCK_M, BLOCK_I), dtype=tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    x = tl.load(x_rows + k0, mask=routed[:, None], other=0.0)
                    acc_gate = tl.dot(x, tl.trans(tl.load(w_gate + k0)), acc_gate)
                    acc_up = tl.dot(x, tl.trans(tl.load(w_gate + (I * H + k0))), acc_up)
                act = (acc_gate * tl.sigmoid(acc_gate) * acc_up).to(w2_ptr.dtype.element_ty)
                w_down = w2_ptr + expert * (H * I) + i[:, None] * W2_STRIDE_I + hh[None, :] * W2_STRIDE_H
                y_rows = acc_ptr + toks[:, None].to(tl.int64) * H + hh[None, :]
                for h0 in range(0, H, BLOCK_H):
                    part = tl.dot(act, tl.load(w_down + h0 * W2_STRIDE_H)) * scale[:, None]  # [BLOCK_M, BLOCK_H]
                    tl.atomic_add(y_rows + h0, part, mask=routed[:, None], sem="relaxed")
                # Every thread's atomics are ordered before the counters (barrier + release);
                # the program that sees count == needed - 1 owns the token's finished row.
                tl.debug_barrier()
                done = tl.atomic_add(count_ptr + toks, 1, mask=routed, sem="acq_rel")
                toks, ids, distinct = _token_block(expert_ids_ptr, tok0, num_tokens, E, K, K_PAD, BLOCK_M)
                last = routed & (done == distinct * N_CHUNKS - 1)
                if tl.max(last.to(tl.int32), axis=0) > 0:
                    tl.debug_barrier()
                    _write_rows(acc_ptr, out_ptr, count_ptr, stride_out, tok0, last, H, True, BLOCK_M, FINISH_H)


# ---- host launcher -----------------------------------------------------------------------


class _Workspace:
    """The fp32 accumulator [capacity, H] and int32 counters [capacity] of one device and H,
    zero between calls (the kernel leaves them so)."""

    def __init__(self, capacity: int, hidden: int, device: torch.device):
        self.capacity = capacity
        self.acc = torch.zeros((capacity, hidden), dtype=torch.float32, device=device)
        self.count = torch.zeros((capacity,), dtype=torch.int32, device=device)


_WORKSPACES: Dict[Tuple[str, int], _Workspace] = {}
#: Every workspace ever made: a captured graph keeps using the one it was captured with.
_KEEP_ALIVE: List[_Workspace] = []
_LOCK = threading.Lock()


def workspace(num_tokens: int, hidden: int, device: torch.device) -> _Workspace:
    key = (str(device), hidden)
    with _LOCK:
        ws = _WORKSPACES.get(key)
        if ws is None or ws.capacity < num_tokens:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    f"fused_moe needs a workspace for {num_tokens} tokens (H={hidden}) but none was made before "
                    "this CUDA-graph capture: call it once with at least this many tokens before capturing "
                    "(the usual warm-up run does)")
            ws = _Workspace(max(64, _next_pow2(num_tokens)), hidden, device)
            _WORKSPACES[key] = ws
            _KEEP_ALIVE.append(ws)
        return ws


def down_layout(w2: torch.Tensor) -> Tuple[int, int]:
    """(stride over H, stride over I) of w2 [E, H, I]: (I, 1) as given or (1, H) for the view
    of an [E, I, H] copy; anything else is refused."""
    E, H, I = w2.shape
    if w2.is_contiguous():
        return I, 1
    if w2.transpose(1, 2).is_contiguous():
        return 1, H
    raise ValueError(f"w2 must be [E, H, I] contiguous, or the transpose(1, 2) view of a contiguous [E, I, H] "
                     f"tensor; got strides {w2.stride()} for shape {tuple(w2.shape)}")


def fused_moe(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    expert_ids: torch.Tensor,
    routing_weights: torch.Tensor,
    active_mask: Optional[torch.Tensor] = None,
    config: Optional[FusedConfig] = None,
) -> torch.Tensor:
    """Same contract as triton_kernel.fused_moe (hidden_states [T, H]; w13 [E, 2I, H]; w2
    [E, H, I] (see down_layout); expert_ids int32 [T, k]; routing_weights float32 [T, k];
    active_mask bool [E] or None), in one launch. Returns [T, H] in hidden_states.dtype."""
    num_tokens, k = expert_ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    _check(hidden_states, w13, w2, expert_ids, routing_weights, active_mask)
    stride_h, stride_i = down_layout(w2)
    out = torch.empty((num_tokens, hidden), dtype=hidden_states.dtype, device=hidden_states.device)
    if num_tokens == 0:
        return out
    if active_mask is None:
        from oea_trt.moe.grouping import active_mask_from_ids

        active_mask = active_mask_from_ids(expert_ids, num_experts)
    cfg = fitted(config or default_config(num_tokens, hidden, inter, k, num_experts), num_tokens, hidden, inter)
    ws = workspace(num_tokens, hidden, hidden_states.device)
    max_active = min(num_experts, num_tokens * k)
    kwargs = dict(H=hidden, I=inter, E=num_experts, E_PAD=_next_pow2(num_experts), K=k, K_PAD=_next_pow2(k),
                  W2_STRIDE_H=stride_h, W2_STRIDE_I=stride_i, BLOCK_M=cfg.block_m, BLOCK_I=cfg.block_i,
                  BLOCK_K=cfg.block_k, BLOCK_H=cfg.block_h, FINISH_H=finish_block(hidden), USE_PDL=cfg.pdl,
                  num_warps=cfg.warps, num_stages=cfg.stages)
    if cfg.pdl:
        kwargs["launch_pdl"] = True
    _launch_persistent(
        _fused_moe_kernel, max(1, max_active * (inter // cfg.block_i)), cfg.max_programs,
        (hidden_states, w13, w2, expert_ids.contiguous(), routing_weights.contiguous(),
         active_mask.contiguous().view(torch.uint8), out, ws.acc, ws.count, num_tokens, hidden_states.stride(0),
         out.stride(0)),
        kwargs)
    return out


def _check(x, w13, w2, expert_ids, routing_weights, active_mask) -> None:
    from oea_trt.moe.triton.three_launch import _check as check_contract

    # The three-launch kernel's checks, on a contiguous stand-in for w2 (only its shape and
    # dtype are looked at there; its layout was checked by down_layout).
    check_contract(x, w13, torch.empty(w2.shape, dtype=w2.dtype, device="meta"), expert_ids, routing_weights,
                   active_mask)
