"""The one-launch MoE kernel (oea_trt/moe/fused_kernel.py) against the loop reference.

Without a GPU the kernel runs in Triton's interpreter in fp16 (see test_moe_triton.py for why);
programs then run one after another, so the atomics, the per-token completion counters and the
"last program finishes the row" path are exercised, though not their concurrency (the GPU tests
in test_moe_gpu.py do that on the H200).
"""
import pytest
import torch

# Sets TRITON_INTERPRET=1 without a GPU:
from moe_triton_cpu import DEVICE, DTYPE, assert_close, interpreter, routing_case  # noqa: F401 (autouse)

triton = pytest.importorskip("triton", reason="the Triton kernel needs the triton package (pip install triton)")

from oea_trt.moe import ExpertWeights, moe_forward  # noqa: E402
from oea_trt.moe.reference import moe_reference  # noqa: E402
from oea_trt.moe.shapes import MoEShape  # noqa: E402

SHAPE = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)


@pytest.fixture(scope="module")
def weights():
    return ExpertWeights.random(SHAPE, seed=5, dtype=DTYPE, device=DEVICE).with_down_transposed()


def _workspace_is_clean():
    from oea_trt.moe.fused_kernel import _WORKSPACES

    for ws in _WORKSPACES.values():
        assert torch.count_nonzero(ws.acc) == 0 and torch.count_nonzero(ws.count) == 0


def _fused(x, w, ids, wts, mask=None, layout="hi", **cfg):
    from oea_trt.moe.fused_kernel import FusedConfig, fused_moe

    config = FusedConfig(**cfg) if cfg else None
    return fused_moe(x, w.w13, w.down(layout), ids, wts, mask, config)


# 1: one token; 5: a few; 17: block_m 32; 70: more tokens than one 64-row tile (two passes).
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (5, 2, "invalid"), (17, 1, "num_experts"),
                                                (70, 3, "top1")])
@pytest.mark.parametrize("layout", ["hi", "ih"])
def test_matches_reference_and_leaves_workspace_zero(weights, num_tokens, k0, fill, layout):
    x, r = routing_case(SHAPE, num_tokens, k0, fill, seed=num_tokens)
    ref = moe_reference(x, weights.w13, weights.w2, r.expert_ids, r.weights)
    # Narrow chunks (2 per expert, 2 down steps) and one chunk per expert.
    for cfg in (dict(block_i=16, block_k=32, block_h=32), dict(block_i=32, block_k=64, block_h=64)):
        out = _fused(x, weights, r.expert_ids, r.weights, r.active_mask, layout, **cfg)
        assert out.dtype == DTYPE and out.shape == x.shape
        assert_close(out, ref)
        _workspace_is_clean()  # the next call must find zeros: no memset between calls


def test_layer_api_reads_transposed_down(weights):
    x, r = routing_case(SHAPE, 9, 2, "invalid", seed=11)
    out = moe_forward(x, weights, r, impl="fused")
    assert_close(out, moe_reference(x, weights.w13, weights.w2, r.expert_ids, r.weights))
    plain = ExpertWeights(weights.w13, weights.w2)  # no w2_t: the kernel reads w2 as given
    assert_close(moe_forward(x, plain, r, impl="fused"), out)


def test_repeats_fill_and_tokens_without_experts(weights):
    """A repeated expert in a row is one expert with the summed weight (the completion count
    must not wait for the repeat); fill ids are skipped; a token with only fill gets zeros even
    where the output buffer held garbage."""
    ids = torch.tensor([[2, 5, 2, -1], [7, 8, -1, 0], [-1, -1, -1, -1], [3, 3, 3, 3]], dtype=torch.int32,
                       device=DEVICE)
    wts = torch.tensor([[0.5, 0.25, 0.125, 0.9], [0.3, 0.9, 0.9, 0.7], [1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]],
                       device=DEVICE)
    x = torch.randn(4, SHAPE.hidden_size, generator=torch.Generator().manual_seed(3)).to(DEVICE, DTYPE)
    torch.empty(4 * SHAPE.hidden_size, dtype=DTYPE).fill_(7.0)  # leave garbage around in the allocator
    for layout in ("hi", "ih"):
        out = _fused(x, weights, ids, wts, None, layout, block_i=16, block_k=32, block_h=32)
        assert_close(out, moe_reference(x, weights.w13, weights.w2, ids, wts))
        assert torch.count_nonzero(out[2]) == 0
        _workspace_is_clean()


def test_no_active_expert_at_all(weights):
    ids = torch.full((3, 4), -1, dtype=torch.int32, device=DEVICE)
    ids[1] = SHAPE.num_experts  # the other fill sentinel
    x = torch.randn(3, SHAPE.hidden_size, generator=torch.Generator().manual_seed(4)).to(DEVICE, DTYPE)
    out = _fused(x, weights, ids, torch.ones(3, 4, device=DEVICE))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0


def test_empty_batch(weights):
    x = torch.zeros(0, SHAPE.hidden_size, dtype=DTYPE, device=DEVICE)
    ids = torch.zeros(0, 4, dtype=torch.int32, device=DEVICE)
    assert _fused(x, weights, ids, ids.float()).shape == (0, SHAPE.hidden_size)


def test_workspace_grows_and_old_ones_stay_alive(weights):
    from oea_trt.moe import fused_kernel as fk

    small = fk.workspace(1, 48, torch.device(DEVICE))
    big = fk.workspace(300, 48, torch.device(DEVICE))
    assert small.capacity == 64 and big.capacity == 512 and fk.workspace(5, 48, torch.device(DEVICE)) is big
    assert any(ws is small for ws in fk._KEEP_ALIVE)  # a graph captured with it may still use it


def test_input_errors(weights):
    from oea_trt.moe.fused_kernel import FusedConfig, fitted, fused_moe

    x, r = routing_case(SHAPE, 2, 2, "invalid", seed=1)
    with pytest.raises(ValueError, match="expert_ids must be int32"):
        fused_moe(x, weights.w13, weights.w2, r.expert_ids.long(), r.weights)
    with pytest.raises(ValueError, match=r"transpose\(1, 2\) view"):
        padded = torch.cat([weights.w2, weights.w2], dim=2)[:, :, :SHAPE.moe_intermediate_size]  # rows 2I apart
        fused_moe(x, weights.w13, padded, r.expert_ids, r.weights)
    with pytest.raises(ValueError, match="moe_intermediate_size=40 must be a multiple of 16"):
        fitted(FusedConfig(), 4, 64, 40)
    with pytest.raises(ValueError, match="w2_t must be a contiguous"):
        ExpertWeights(weights.w13, weights.w2, weights.w2)


def test_default_tiles_keep_the_gpu_busy_and_fit():
    from oea_trt.moe.fused_kernel import SMEM_BUDGET, default_config, fitted

    # 30B layer: one token (8 experts at most) -> narrow chunks, >= 264 work items.
    one = fitted(default_config(1, 2048, 768, 8, 128), 1, 2048, 768)
    assert one.block_i == 16 and 8 * 768 // one.block_i >= 2 * 132 and one.block_m == 16 and one.warps == 4
    many = fitted(default_config(64, 2048, 768, 8, 128), 64, 2048, 768)
    assert many.block_m == 64 and many.block_i == 32 and many.warps == 8
    for cfg in (one, many):
        per_stage = 2 * ((cfg.block_m + 2 * cfg.block_i) * cfg.block_k + cfg.block_i * cfg.block_h)
        assert cfg.stages * per_stage <= SMEM_BUDGET


@pytest.mark.slow
def test_fused_kernel_compiles_for_sm90_without_spills():
    """The real compile for the H200, in a subprocess: the one-launch kernel's default tiles of
    the 30B layer at B=1 and B=64 fit in shared memory, pipeline their loads and do not spill."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_moe_kernels.py"
    done = subprocess.run([sys.executable, str(script), "--preset", "qwen3-30b-a3b", "--batch", "1", "64",
                           "--kernel", "fused"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 kernels compiled for sm_90" in done.stdout and "spill" in done.stdout
