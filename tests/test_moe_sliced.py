"""The sliced path of our Triton MoE kernel (down="sliced", oea_trt/moe/triton/sliced.py): slice
items that stream gate/up and down for a slice of the intermediate dim without waiting, reduce
items that sum each token's partial rows, and the synchronisation workspace left zeroed.

Without a GPU the kernel runs in Triton's interpreter (fp16; programs one after another, so no
program ever waits there: the waiting itself is exercised by test_moe_gpu.py). The outputs are
checked against the fp32 loop and against the one-launch path.
"""
import pytest
import torch

# Sets TRITON_INTERPRET=1 without a GPU:
from moe_triton_cpu import DEVICE, DTYPE, assert_close, interpreter, routing_case  # noqa: F401 (autouse)

triton = pytest.importorskip("triton", reason="the Triton kernel needs the triton package (pip install triton)")

from oea_trt.moe import ExpertWeights  # noqa: E402
from oea_trt.moe.reference import moe_reference  # noqa: E402
from oea_trt.moe.shapes import MoEShape  # noqa: E402

#: I = 48: 3 slices of 16; H = 64: 4 hidden tiles of 16 per down step and per reduce item.
SHAPE = MoEShape("tiny-48", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=48, num_moe_layers=1)
TILES = dict(gu_block_n=16, gu_block_k=16, dn_block_n=16, dn_block_k=16)


@pytest.fixture(scope="module")
def weights():
    return ExpertWeights.random(SHAPE, seed=19, dtype=DTYPE, device=DEVICE)


def _config(num_tokens, **changes):
    from oea_trt.moe.triton import default_config

    return default_config(num_tokens, SHAPE.hidden_size, SHAPE.moe_intermediate_size, SHAPE.top_k,
                          SHAPE.num_experts).replace(**{"down": "sliced", **TILES, **changes})


def _run(x, w, ids, wts, active_mask=None, active_ready=None, **changes):
    from oea_trt.moe.triton import fused_moe

    return fused_moe(x, w.w13, w.w2, ids, wts, active_mask, _config(ids.shape[0], **changes), active_ready=active_ready)


def _assert_clean():
    from oea_trt.moe.triton import sync

    buf = sync.workspace(torch.device(DEVICE))
    assert buf is not None and torch.count_nonzero(buf) == 0, "the workspace was not left zeroed"


@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (1, 2, "top1"), (6, 1, "top1"),
                                                (16, 3, "num_experts"), (40, 2, "invalid")])
def test_matches_reference_and_one_launch_path_and_leaves_workspace_zeroed(weights, num_tokens, k0, fill):
    x, r = routing_case(SHAPE, num_tokens, k0, fill, seed=140 + num_tokens)
    out = _run(x, weights, r.expert_ids, r.weights, r.active_mask)
    _assert_clean()
    assert_close(out, moe_reference(x, weights.w13, weights.w2, r.expert_ids, r.weights))
    # Same products; the down sum split over slices, so the last bits may differ.
    assert_close(out, _run(x, weights, r.expert_ids, r.weights, r.active_mask, down="one_launch"), tol=2e-3)
    assert torch.equal(out, _run(x, weights, r.expert_ids, r.weights, r.active_mask))


@pytest.mark.parametrize("programs", [1, 2, 5, 60])
def test_any_grid_size_gives_the_same_bits(weights, programs):
    """Work goes by ticket, not by program id: one program doing every item, a few, or more
    programs than items give identical outputs (2 active experts: 6 slice items + 44 reduce)."""
    x, r = routing_case(SHAPE, 11, 2, "top1", seed=13)
    few = torch.tensor([1, 6], dtype=torch.int32, device=DEVICE)[torch.arange(11 * 4, device=DEVICE) % 2].view(11, 4)
    for ids in (r.expert_ids, few):
        want = _run(x, weights, ids, r.weights)
        assert torch.equal(_run(x, weights, ids, r.weights, max_programs=programs), want)
        _assert_clean()


@pytest.mark.parametrize("slice_n,dn_n", [(16, 32), (64, 64), (32, 16)])
def test_slice_widths_and_hidden_tiles(slice_n, dn_n):
    """Other slice widths (I = 96: 6 slices of 16, 3 of 32; 64 does not divide 96 and is fitted
    to 32) and hidden tiles match the reference."""
    shape = MoEShape("tiny-96", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=96, num_moe_layers=1)
    w = ExpertWeights.random(shape, seed=5, dtype=DTYPE, device=DEVICE)
    x, r = routing_case(shape, 5, 2, "invalid", seed=55)
    from oea_trt.moe.triton import default_config, fused_moe

    cfg = default_config(5, 64, 96, 4, 8).replace(down="sliced", gu_block_n=slice_n,
                                                  gu_block_k=32, dn_block_n=dn_n)
    out = fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, cfg)
    assert_close(out, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))
    _assert_clean()


@pytest.mark.parametrize("programs", [None, 2, 60])
def test_early_active_set_changes_no_bits_and_consumes_the_flag(weights, programs):
    """Started on the routing's published active set (a flag the routing kernel would have set;
    set here by hand): the same bits as after the routing, for any grid, with a token that has
    no expert (zeros); the flag ends cleared, the workspace zeroed."""
    for num_tokens, k0, fill in ((1, 2, "invalid"), (11, 2, "top1"), (16, 3, "num_experts")):
        x, r = routing_case(SHAPE, num_tokens, k0, fill, seed=170 + num_tokens)
        ids = r.expert_ids.clone()
        ids[0] = -1
        mask = torch.zeros(SHAPE.num_experts, dtype=torch.bool, device=DEVICE)
        mask[ids[(ids >= 0) & (ids < SHAPE.num_experts)].long()] = True
        want = _run(x, weights, ids, r.weights, mask)
        flag = torch.ones(1, dtype=torch.int32, device=DEVICE)
        got = _run(x, weights, ids, r.weights, mask, active_ready=flag, max_programs=programs)
        assert torch.equal(got, want), (num_tokens, programs)
        assert torch.count_nonzero(got[0]) == 0
        assert int(flag[0]) == 0, "the kernel did not clear the active-set flag"
        _assert_clean()


def test_repeated_expert_fill_and_tokens_with_no_expert(weights):
    """A slot repeating an earlier slot's expert is no new row (its weight is added to the
    first's); fill ids (-1, E) are skipped; a token with only fill gets a zero row."""
    ids = torch.tensor([[2, 5, 2, -1], [7, 8, -1, 0], [-1, -1, 8, -1], [3, 3, 3, 3]], dtype=torch.int32,
                       device=DEVICE)
    wts = torch.tensor([[0.5, 0.25, 0.125, 0.9], [0.3, 0.9, 0.9, 0.7], [1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]],
                       device=DEVICE)
    x = torch.randn(4, SHAPE.hidden_size, generator=torch.Generator().manual_seed(4)).to(DEVICE, DTYPE)
    out = _run(x, weights, ids, wts)
    assert_close(out, moe_reference(x, weights.w13, weights.w2, ids, wts))
    assert torch.count_nonzero(out[2]) == 0
    _assert_clean()


def test_an_expert_missing_from_the_active_mask_is_skipped(weights):
    """A mask that disagrees with the ids (a caller's error): a slot naming an expert outside the
    mask has no slice items and no partial rows, so it counts as not selected, never as rows
    that were not written."""
    x, r = routing_case(SHAPE, 6, 4, "invalid", seed=66)
    ids = r.expert_ids.clone()
    dropped = int(ids[0, 0])
    mask = r.active_mask.clone()
    mask[dropped] = False
    want_ids = torch.where(ids == dropped, torch.full_like(ids, -1), ids)
    out = _run(x, weights, ids, r.weights, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out, _run(x, weights, want_ids, r.weights, mask))
    _assert_clean()


def test_slices_widen_with_the_batch_and_stages_fit():
    """fitted() widens a sliced config's slices so that a call writes at most SLICED_PART_ROWS
    partial rows and has at most SLICED_MAX_SLICES slices, and halves a step where even two
    pipeline stages would not fit in shared memory (here the 512-row down step at B=64)."""
    from oea_trt.moe.triton import KernelConfig, fitted
    from oea_trt.moe.triton.config import SLICED_MAX_SLICES, SLICED_PART_ROWS, SMEM_BUDGET, sliced_width, stage_bytes

    cfg = KernelConfig(down="sliced", gu_block_n=16, gu_block_k=256, dn_block_n=512)
    widths = {T: fitted(cfg, T, 2048, 768, top_k=8).gu_block_n for T in (1, 8, 16, 32, 64)}
    assert widths == {1: 16, 8: 16, 16: 32, 32: 64, 64: 128}
    for T, width in widths.items():
        assert T * 8 * (768 // width) <= SLICED_PART_ROWS
    assert fitted(cfg, 64, 2048, 768).gu_block_n == 16  # no top_k: only the slice count bound
    assert sliced_width(16, 1, 16384) == 16384 // SLICED_MAX_SLICES
    assert sliced_width(16, 10**6, 48) == 16  # cannot widen past a divisor of I
    big = fitted(cfg, 64, 2048, 768, top_k=8)
    assert 2 * max(stage_bytes(big)) <= SMEM_BUDGET and big.dn_block_n == 256 and big.gu_stages >= 2


def test_larger_batches_take_the_one_launch_path():
    """One token block only: fitted() hands a sliced config for more than 64 tokens (a prefill
    chunk under a decode config) to the one-launch path; the shared memory stages count the
    down step's w2 tile only (act stays in registers)."""
    from oea_trt.moe.triton import KernelConfig, fitted

    cfg = KernelConfig(down="sliced", gu_block_n=16, gu_block_k=256, dn_block_n=128, gu_stages=8)
    assert fitted(cfg, 64, 2048, 768).down == "sliced"
    assert fitted(cfg, 65, 2048, 768).down == "one_launch"
    assert fitted(cfg, 16, 2048, 768).gu_stages == 192 * 1024 // (2 * (16 + 2 * 16) * 256)
    assert KernelConfig(down="sliced").launches == 1


@pytest.mark.slow
def test_compiles_for_sm90_with_pipelined_loads_and_griddepcontrol():
    """The real compile for sm_90, in a subprocess: the sliced kernel of the 30B layer at B=1,
    16 and 64, the default and the benchmark's slice widths, with and without PDL and started
    on the early active set: fits in shared memory, streams through cp.async, carries
    griddepcontrol exactly with PDL."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_moe_kernels.py"
    done = subprocess.run([sys.executable, str(script), "--preset", "qwen3-30b-a3b", "--batch", "1", "16", "64",
                           "--kernel", "sliced"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    compiled = int(re.search(r"(\d+) kernels compiled for sm_90", done.stdout).group(1))
    assert compiled >= 3 * 3 and done.stdout.count("sliced B=") == compiled and "PROBLEM" not in done.stdout
