"""The one-launch path of our Triton MoE kernel (down="one_launch", oea_trt/moe/triton/one_launch.py):
work tickets, the per-expert gate/up -> down hand-off, the per-token finish by the last
program, and the synchronisation workspace left zeroed for the next call.

Without a GPU the kernel runs in Triton's interpreter (fp16; programs one after another, so no
program ever waits there: the waiting itself is exercised by test_moe_gpu.py). The outputs are
checked against the fp32 loop and against the three-launch path.
"""
import pytest
import torch

# Sets TRITON_INTERPRET=1 without a GPU:
from moe_triton_cpu import DEVICE, DTYPE, assert_close, interpreter, routing_case  # noqa: F401 (autouse)

triton = pytest.importorskip("triton", reason="the Triton kernel needs the triton package (pip install triton)")

from oea_trt.moe import ExpertWeights  # noqa: E402
from oea_trt.moe.reference import moe_reference  # noqa: E402
from oea_trt.moe.shapes import MoEShape  # noqa: E402

#: I = 48: 3 gate/up N-tiles of 16; H = 64: 4 hidden tiles of 16 per down item.
SHAPE = MoEShape("tiny-48", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=48, num_moe_layers=1)
TILES = dict(gu_block_n=16, gu_block_k=16, dn_block_n=16, dn_block_k=16)


@pytest.fixture(scope="module")
def weights():
    return ExpertWeights.random(SHAPE, seed=9, dtype=DTYPE, device=DEVICE)


def _config(num_tokens, **changes):
    from oea_trt.moe.triton import default_config

    return default_config(num_tokens, SHAPE.hidden_size, SHAPE.moe_intermediate_size, SHAPE.top_k,
                          SHAPE.num_experts).replace(**{"down": "one_launch", **TILES, **changes})


def _run(x, w, ids, wts, active_mask=None, active_ready=None, **changes):
    """The one-launch path through fused_moe (changes: KernelConfig fields, e.g. max_programs
    for the grid)."""
    from oea_trt.moe.triton import fused_moe

    return fused_moe(x, w.w13, w.w2, ids, wts, active_mask, _config(ids.shape[0], **changes), active_ready=active_ready)


def _assert_clean():
    from oea_trt.moe.triton import sync

    buf = sync.workspace(torch.device(DEVICE))
    assert buf is not None and torch.count_nonzero(buf) == 0, "the one-launch workspace was not left zeroed"


# 70 tokens: two 64-row token blocks in every item (and the per-token counters of both).
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (6, 1, "top1"), (16, 3, "num_experts"),
                                                (70, 2, "invalid")])
def test_matches_reference_and_three_launch_path_and_leaves_workspace_zeroed(weights, num_tokens, k0, fill):
    from oea_trt.moe.triton import fused_moe

    x, r = routing_case(SHAPE, num_tokens, k0, fill, seed=40 + num_tokens)
    out = _run(x, weights, r.expert_ids, r.weights, r.active_mask)
    _assert_clean()
    assert_close(out, moe_reference(x, weights.w13, weights.w2, r.expert_ids, r.weights))
    slots = fused_moe(x, weights.w13, weights.w2, r.expert_ids, r.weights, r.active_mask,
                      _config(num_tokens, down="slots"))
    # Same products, each token's rows added in slot order in fp32 by both paths.
    assert_close(out, slots, tol=1e-3)
    assert torch.equal(out, _run(x, weights, r.expert_ids, r.weights, r.active_mask))


@pytest.mark.parametrize("programs", [1, 2, 5, 40])
def test_any_grid_size_gives_the_same_bits(weights, programs):
    """Work goes by ticket, not by program id: one program doing every item, a few, or more
    programs than items (2 active experts: 14 items for 40 programs, most draw a ticket past
    the end and leave) give identical outputs."""
    x, r = routing_case(SHAPE, 11, 2, "top1", seed=3)
    few = torch.tensor([1, 6], dtype=torch.int32, device=DEVICE)[torch.arange(11 * 4, device=DEVICE) % 2].view(11, 4)
    for ids in (r.expert_ids, few):
        want = _run(x, weights, ids, r.weights)
        assert torch.equal(_run(x, weights, ids, r.weights, max_programs=programs), want)
        _assert_clean()


@pytest.mark.parametrize("programs", [None, 3])
def test_late_stream_changes_no_bits(weights, programs):
    """Streaming before the token list is known (early_stream, the default) only changes when
    loads are issued: same bits as waiting for it, with one token block (11 tokens) and two
    (70)."""
    for num_tokens in (11, 70):
        x, r = routing_case(SHAPE, num_tokens, 2, "top1", seed=5 + num_tokens)
        want = _run(x, weights, r.expert_ids, r.weights, r.active_mask)
        got = _run(x, weights, r.expert_ids, r.weights, r.active_mask, max_programs=programs, early_stream=False)
        assert torch.equal(got, want), (programs, num_tokens)
        _assert_clean()


@pytest.mark.parametrize("programs", [None, 2, 40])
def test_early_active_set_changes_no_bits_and_consumes_the_flag(weights, programs):
    """Started on the routing's published active set (a flag the routing kernel would have set;
    set here by hand), gate/up items write act rows by active rank without reading the routing's
    rows: the same bits as the default, for any grid, with tokens that have no expert; the
    flag ends cleared, the workspace zeroed."""
    from oea_trt.moe.triton import fitted, one_launch

    for num_tokens, k0, fill in ((1, 2, "invalid"), (11, 2, "top1"), (16, 3, "num_experts")):
        x, r = routing_case(SHAPE, num_tokens, k0, fill, seed=70 + num_tokens)
        ids = r.expert_ids.clone()
        ids[0] = -1  # token 0 has no expert: its zero row comes from the first down item
        wts = r.weights.clone()
        mask = torch.zeros(SHAPE.num_experts, dtype=torch.bool, device=DEVICE)
        mask[ids[(ids >= 0) & (ids < SHAPE.num_experts)].long()] = True
        want = _run(x, weights, ids, wts, mask)
        flag = torch.ones(1, dtype=torch.int32, device=DEVICE)
        got = _run(x, weights, ids, wts, mask, active_ready=flag, max_programs=programs)
        assert one_launch.early_active(fitted(_config(num_tokens), num_tokens, 64, 48), num_tokens, flag)
        assert torch.equal(got, want), (num_tokens, programs)
        assert torch.count_nonzero(got[0]) == 0
        assert int(flag[0]) == 0, "the kernel did not clear the active-set flag"
        _assert_clean()


def test_moe_forward_passes_the_routing_flag_to_the_kernel(weights):
    """moe_forward(impl="triton") hands RoutingResult.active_ready to the one-launch kernel: the
    flag (set by hand, as the routing kernel would) ends cleared, the output is the default's."""
    from oea_trt.moe.layer import moe_forward

    x, r = routing_case(SHAPE, 6, 2, "invalid", seed=91)
    flag = torch.ones(1, dtype=torch.int32, device=DEVICE)
    got = moe_forward(x, weights, r._replace(active_ready=flag), impl="triton")
    assert int(flag[0]) == 0, "the flag never reached the kernel"
    assert torch.equal(got, moe_forward(x, weights, r, impl="triton"))


def test_early_active_needs_the_flag_one_block_and_the_option():
    from oea_trt.moe.triton import one_launch

    flag = torch.ones(1, dtype=torch.int32)
    cfg = _config(16)
    assert one_launch.early_active(cfg, 16, flag)
    assert not one_launch.early_active(cfg, 16, None)
    assert not one_launch.early_active(cfg.replace(early_active=False), 16, flag)
    assert not one_launch.early_active(cfg.replace(early_stream=False), 16, flag)
    assert not one_launch.early_active(cfg, 70, flag)  # two token blocks


def test_three_launch_path_same_bits_with_and_without_early_stream_and_any_grid(weights):
    x, r = routing_case(SHAPE, 9, 3, "invalid", seed=21)
    outs = [_run(x, weights, r.expert_ids, r.weights, r.active_mask, down="slots", early_stream=early,
                 max_programs=programs) for early, programs in ((True, None), (False, None), (True, 1), (True, 40))]
    assert all(torch.equal(outs[0], out) for out in outs[1:])
    assert_close(outs[0], moe_reference(x, weights.w13, weights.w2, r.expert_ids, r.weights))


def test_repeated_expert_fill_and_tokens_with_no_expert(weights):
    """A slot repeating an earlier slot's expert is no new row (its weight is added to the
    first's); fill ids (-1, E) are skipped; a token with only fill gets a zero row, written by
    program 0 (no down item counts it)."""
    ids = torch.tensor([[2, 5, 2, -1], [7, 8, -1, 0], [-1, -1, 8, -1], [3, 3, 3, 3]], dtype=torch.int32,
                       device=DEVICE)
    wts = torch.tensor([[0.5, 0.25, 0.125, 0.9], [0.3, 0.9, 0.9, 0.7], [1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]],
                       device=DEVICE)
    x = torch.randn(4, SHAPE.hidden_size, generator=torch.Generator().manual_seed(4)).to(DEVICE, DTYPE)
    out = _run(x, weights, ids, wts)
    assert_close(out, moe_reference(x, weights.w13, weights.w2, ids, wts))
    assert torch.count_nonzero(out[2]) == 0
    _assert_clean()


def test_workspace_words_and_growth():
    from oea_trt.moe.triton import one_launch, sync

    assert one_launch.sync_words(num_experts=128, num_tokens=16, h_tiles=32) == 3 + 128 + 16 * 32
    small = sync.sync_workspace(10, torch.device("cpu"))
    assert small.numel() >= 10 and small.dtype == torch.int32
    big = sync.sync_workspace(small.numel() + 1, torch.device("cpu"))
    assert big.numel() > small.numel() and sync.sync_workspace(5, torch.device("cpu")) is big


@pytest.mark.slow
def test_compiles_for_sm90_with_pipelined_loads_and_griddepcontrol():
    """The real compile for sm_90, in a subprocess: the one-launch kernel of the 30B layer at
    B=16 and 64, default tiles with and without PDL and started on the early active set: fits
    in shared memory, streams both item kinds through cp.async, carries griddepcontrol exactly
    with PDL."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_moe_kernels.py"
    done = subprocess.run([sys.executable, str(script), "--preset", "qwen3-30b-a3b", "--batch", "16", "64",
                           "--kernel", "one_launch"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import re

    # Per batch: PDL on, off, and on with the early active set.
    compiled = int(re.search(r"(\d+) kernels compiled for sm_90", done.stdout).group(1))
    assert compiled == 6 and done.stdout.count("one_launch B=") == compiled and "PROBLEM" not in done.stdout
