"""Our expert-major Triton MoE kernel against the loop reference.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before the
kernel module is imported) in fp16: the interpreter's tl.dot mishandles bf16 (numpy has no
bfloat16), and the kernel is dtype-generic. The bf16 checks at Qwen3 shapes are in
test_moe_gpu.py.
"""
import pytest
import torch

# Sets TRITON_INTERPRET=1 without a GPU:
from moe_triton_cpu import DEVICE, DTYPE, assert_close, interpreter, routing_case  # noqa: F401 (autouse)

triton = pytest.importorskip("triton", reason="the Triton kernel needs the triton package (pip install triton)")

from oea_trt import OEAConfig, oea_route  # noqa: E402
from oea_trt.moe import ExpertWeights, moe_forward  # noqa: E402
from oea_trt.moe.reference import moe_reference  # noqa: E402
from oea_trt.moe.shapes import MoEShape  # noqa: E402

SHAPE = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)


@pytest.fixture(scope="module")
def weights():
    return ExpertWeights.random(SHAPE, seed=5, dtype=DTYPE, device=DEVICE)


#: Both paths, named explicitly: "slots" (3 launches) and "one_launch" (1 launch).
DOWNS = ("slots", "one_launch")
#: I = 48 is not a power of two: the down items' K-steps of 16 run 3 per expert, H = 64 in
#: 16-row tiles gives 4 down items per expert; the gate/up items take 16-wide N-tiles.
SHAPE_48 = MoEShape("tiny-48", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=48, num_moe_layers=1)


def _kernel(x, w, routing, **config):
    from oea_trt.moe.triton import default_config, fused_moe

    T, k = routing.expert_ids.shape
    base = default_config(T, w.hidden_size, w.intermediate_size, k, w.num_experts)
    return fused_moe(x, w.w13, w.w2, routing.expert_ids, routing.weights, routing.active_mask, base.replace(**config))


# 1: one token; 5: a few; 17: block_m 32; 70: more tokens than one 64-row tile (two passes).
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (5, 2, "invalid"), (17, 1, "num_experts"),
                                                (70, 3, "top1")])
def test_kernel_matches_reference(weights, num_tokens, k0, fill):
    x, routing = routing_case(SHAPE, num_tokens, k0, fill, seed=num_tokens)
    out = moe_forward(x, weights, routing, impl="triton")
    ref = moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)
    assert out.dtype == DTYPE and out.shape == x.shape
    assert_close(out, ref)


@pytest.fixture(scope="module")
def weights_48():
    return ExpertWeights.random(SHAPE_48, seed=6, dtype=DTYPE, device=DEVICE)


# 40 and 70 tokens: more than one 16-row token tile (block_m is raised to 64 for 40; 70 needs
# two token blocks: every work item's token loop).
@pytest.mark.parametrize("down", DOWNS)
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 8, "invalid"), (3, 2, "top1"), (16, 3, "invalid"),
                                                (17, 1, "num_experts"), (40, 4, "top1"), (70, 2, "invalid")])
def test_both_down_paths_match_reference_with_k_steps_and_h_tiles(weights_48, down, num_tokens, k0, fill):
    """I=48 in K-steps of 16 (3 per expert), H=64 in 4 tiles of 16; top-4 routing at every k0
    and fill mode; two calls give bit-identical outputs."""
    logits = torch.randn(num_tokens, 8, generator=torch.Generator().manual_seed(100 + num_tokens))
    k0 = min(k0, SHAPE_48.top_k)
    routing = oea_route(logits.to(DEVICE), OEAConfig(8, SHAPE_48.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, 64, generator=torch.Generator().manual_seed(num_tokens)).to(DEVICE, DTYPE)
    cfg = dict(down=down, gu_block_n=16, gu_block_k=16, dn_block_n=16, dn_block_k=16)
    out = _kernel(x, weights_48, routing, **cfg)
    ref = moe_reference(x, weights_48.w13, weights_48.w2, routing.expert_ids, routing.weights)
    assert_close(out, ref)
    assert torch.equal(out, _kernel(x, weights_48, routing, **cfg))


@pytest.mark.parametrize("changes", [dict(dn_preload=True), dict(dn_preload=True, max_programs=2)],
                         ids=["preload", "preload, 2 programs"])
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (5, 2, "top1"), (40, 3, "num_experts")])
def test_preloaded_down_tiles_give_the_streamed_bits(weights_48, changes, num_tokens, k0, fill):
    """dn_preload (a down program's first w2 tile loaded whole, before its wait; later items
    streamed) computes what the plain three-launch path does, bit for bit, with the same
    tiles; I=48 is 3 K steps of 16."""
    from oea_trt.moe.triton import fitted

    logits = torch.randn(num_tokens, 8, generator=torch.Generator().manual_seed(300 + num_tokens))
    routing = oea_route(logits.to(DEVICE), OEAConfig(8, SHAPE_48.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, 64, generator=torch.Generator().manual_seed(num_tokens)).to(DEVICE, DTYPE)
    cfg = dict(down="slots", gu_block_n=16, gu_block_k=16, dn_block_n=16, dn_block_k=16)
    assert fitted(_config(num_tokens, weights_48, routing, **cfg, **changes), num_tokens, 64, 48) \
        .dn_preload == changes.get("dn_preload", False)
    out = _kernel(x, weights_48, routing, **cfg, **changes)
    assert torch.equal(out, _kernel(x, weights_48, routing, **cfg, max_programs=changes.get("max_programs")))
    assert_close(out, moe_reference(x, weights_48.w13, weights_48.w2, routing.expert_ids, routing.weights))


@pytest.mark.parametrize("changes", [dict(), dict(dn_preload=True)], ids=["plain", "preloaded"])
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (5, 2, "top1"), (70, 2, "invalid")])
def test_handoff_gives_the_same_bits_whatever_the_grid(weights_48, changes, num_tokens, k0, fill):
    """handoff (a down item waits on its expert's gate/up counter, not on the whole gate/up
    kernel) changes when an item runs, never what it computes: bit-identical to the same config
    without it, for grids of 1, 2 and 3 programs, 70 tokens in two token blocks included; the
    expert counters are left zeroed for the next call."""
    from oea_trt.moe.triton import sync

    logits = torch.randn(num_tokens, 8, generator=torch.Generator().manual_seed(500 + num_tokens))
    routing = oea_route(logits.to(DEVICE), OEAConfig(8, SHAPE_48.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, 64, generator=torch.Generator().manual_seed(num_tokens)).to(DEVICE, DTYPE)
    cfg = dict(down="slots", gu_block_n=16, gu_block_k=16, dn_block_n=16, dn_block_k=16, **changes)
    without = _kernel(x, weights_48, routing, **cfg)
    for programs in (1, 2, 3):
        assert torch.equal(_kernel(x, weights_48, routing, **cfg, handoff=True, max_programs=programs), without)
        assert torch.count_nonzero(sync.workspace(x.device)) == 0


def _config(num_tokens, w, routing, **changes):
    from oea_trt.moe.triton import default_config

    return default_config(num_tokens, w.hidden_size, w.intermediate_size, routing.expert_ids.shape[1],
                          w.num_experts).replace(**changes)


def test_preload_is_dropped_where_it_cannot_work():
    """fitted() keeps dn_preload only on the three-launch path with a w2 tile that fits the
    register budget in at most 4 K steps, widening dn_block_k to get there."""
    from oea_trt.moe.triton import KernelConfig, fitted

    cfg = fitted(KernelConfig(down="slots", dn_block_n=32, dn_block_k=128, dn_preload=True), 1, 2048, 768)
    assert cfg.dn_preload and cfg.dn_block_k == 256  # 30B layer: 3 K steps of 256
    assert not fitted(KernelConfig(down="one_launch", dn_preload=True), 1, 2048, 768).dn_preload
    assert not fitted(KernelConfig(down="slots", dn_block_n=64, dn_warps=4, dn_preload=True), 1, 2048, 768).dn_preload
    assert fitted(KernelConfig(down="slots", dn_block_n=64, dn_warps=8, dn_preload=True), 1, 2048, 768).dn_preload
    # 235B layer, I=1536: a 32-row tile is 96 KB, more than 4 warps can hold
    assert not fitted(KernelConfig(down="slots", dn_block_n=32, dn_preload=True), 1, 4096, 1536).dn_preload
    # more tokens than one block (or streaming after the token list): no preload, tiles as asked
    for tokens, early in ((100, True), (4, False)):
        cfg = fitted(KernelConfig(down="slots", dn_block_n=32, dn_preload=True, early_stream=early), tokens, 2048, 768)
        assert not cfg.dn_preload and cfg.dn_block_k == 128


@pytest.mark.parametrize("down", DOWNS)
def test_repeated_expert_in_a_row_adds_both_weights(weights, down):
    """Two slots of one token naming one expert are one row carrying the summed weight; fill
    slots (-1, E) are skipped; a token with only fill gets zeros."""
    from oea_trt.moe.triton import KernelConfig, fused_moe

    ids = torch.tensor([[2, 5, 2, -1], [7, 8, -1, 0], [-1, -1, -1, -1]], dtype=torch.int32, device=DEVICE)
    wts = torch.tensor([[0.5, 0.25, 0.125, 0.9], [0.3, 0.9, 0.9, 0.7], [1.0, 1.0, 1.0, 1.0]], device=DEVICE)
    x = torch.randn(3, SHAPE.hidden_size, generator=torch.Generator().manual_seed(3)).to(DEVICE, DTYPE)
    out = fused_moe(x, weights.w13, weights.w2, ids, wts, config=KernelConfig(down=down))
    ref = moe_reference(x, weights.w13, weights.w2, ids, wts)
    assert_close(out, ref)
    assert torch.count_nonzero(out[2]) == 0


def test_active_mask_from_routing_equals_computed(weights):
    x, routing = routing_case(SHAPE, 9, 2, "invalid", seed=11)
    given = moe_forward(x, weights, routing, impl="triton")
    computed = moe_forward(x, weights, expert_ids=routing.expert_ids, routing_weights=routing.weights, impl="triton")
    assert torch.equal(given, computed)


def test_empty_batch(weights):
    x = torch.zeros(0, SHAPE.hidden_size, dtype=DTYPE, device=DEVICE)
    ids = torch.zeros(0, 4, dtype=torch.int32, device=DEVICE)
    out = moe_forward(x, weights, expert_ids=ids, routing_weights=ids.float(), impl="triton")
    assert out.shape == (0, SHAPE.hidden_size)


def test_input_errors(weights):
    from oea_trt.moe.triton import default_config, fitted, fused_moe

    x, routing = routing_case(SHAPE, 2, 2, "invalid", seed=1)
    with pytest.raises(ValueError, match="expert_ids must be int32"):
        fused_moe(x, weights.w13, weights.w2, routing.expert_ids.long(), routing.weights)
    with pytest.raises(ValueError, match="share one dtype"):
        fused_moe(x.float(), weights.w13, weights.w2, routing.expert_ids, routing.weights)
    with pytest.raises(ValueError, match=r"hidden_states must be \[T, 64\]"):
        fused_moe(x[:, :32], weights.w13, weights.w2, routing.expert_ids, routing.weights)
    with pytest.raises(ValueError, match="hidden_size=72 must be a multiple of 16"):
        fitted(default_config(4, 72, 32, 4, 8), 4, 72, 32)
    with pytest.raises(ValueError, match="active_ready must be one int32"):
        fused_moe(x, weights.w13, weights.w2, routing.expert_ids, routing.weights, routing.active_mask,
                  active_ready=torch.ones(2, dtype=torch.int32, device=DEVICE))


def test_config_covers_decode_batch_in_one_tile():
    from oea_trt.moe.triton.config import SMEM_BUDGET, default_config, fitted

    for batch, block_m in ((1, 16), (16, 16), (17, 32), (64, 64), (200, 64)):
        assert fitted(default_config(batch, 2048, 768, 8, 128), batch, 2048, 768).block_m == block_m
    cfg = fitted(default_config(64, 4096, 192, 8, 128).replace(gu_block_k=256, gu_stages=8), 64, 4096, 192)
    assert 192 % cfg.dn_block_k == 0 and 192 % cfg.gu_block_n == 0
    assert cfg.gu_stages * 2 * (cfg.block_m + 2 * cfg.gu_block_n) * cfg.gu_block_k <= SMEM_BUDGET


@pytest.mark.parametrize("preset", ["qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-235b-a22b-tp8"])
@pytest.mark.parametrize("batch", [1, 16, 17, 64])
def test_default_and_tuner_tiles_divide_the_shape_and_fit_in_shared_memory(preset, batch):
    """The heuristic (one launch up to 16 tokens, 3 launches above) and every config the tuner
    tries, fitted to each preset's layer: tiles divide H and I, pipelines fit in shared memory."""
    from oea_trt.bench.tune import candidate_steps
    from oea_trt.moe.shapes import get_preset
    from oea_trt.moe.triton.config import SMEM_BUDGET, default_config, fitted

    shape = get_preset(preset)
    H, I = shape.hidden_size, shape.moe_intermediate_size
    base = default_config(batch, H, I, shape.top_k, shape.num_experts)
    assert base.launches == (1 if batch <= 16 else 3) and base.pdl is None
    configs = [base] + [change(base) for step in candidate_steps() for change in step]
    assert {c.down for c in configs} == {"slots", "one_launch"}
    for cfg in configs:
        cfg = fitted(cfg, batch, H, I)
        assert H % cfg.gu_block_k == 0 and I % cfg.gu_block_n == 0 and H % cfg.dn_block_n == 0
        assert I % cfg.dn_block_k == 0 and min(cfg.gu_block_n, cfg.dn_block_k) >= 16
        gu_stage = 2 * (cfg.block_m + 2 * cfg.gu_block_n) * cfg.gu_block_k
        dn_stage = 2 * (cfg.block_m + cfg.dn_block_n) * cfg.dn_block_k
        if cfg.down == "one_launch":
            assert cfg.gu_stages * max(gu_stage, dn_stage) <= SMEM_BUDGET
        else:
            assert cfg.gu_stages * gu_stage <= SMEM_BUDGET and cfg.dn_stages * dn_stage <= SMEM_BUDGET


def test_config_errors_and_pdl_needs_a_gpu(weights):
    from oea_trt.moe.triton import KernelConfig
    from oea_trt.moe.triton.launch import pdl_supported

    with pytest.raises(ValueError, match="down must be one of"):
        KernelConfig(down="combine")
    with pytest.raises(ValueError, match="gu_block_n must be a power of two >= 16, got 24"):
        KernelConfig(gu_block_n=24)
    with pytest.raises(ValueError, match="dn_warps must be 1, 2, 4, 8 or 16"):
        KernelConfig(dn_warps=3)
    with pytest.raises(ValueError, match="max_programs must be an int >= 1 or None"):
        KernelConfig(max_programs=0)
    with pytest.raises(ValueError, match=r"unknown KernelConfig field\(s\) \['dc_block_n'\]"):
        KernelConfig.from_dict({"dc_block_n": 16})
    assert KernelConfig().launches == 3 and KernelConfig(down="one_launch").launches == 1
    assert KernelConfig.from_dict(KernelConfig(down="one_launch", pdl=False).to_dict()) == KernelConfig(
        down="one_launch", pdl=False)
    if not pdl_supported(torch.device(DEVICE)):
        x, routing = routing_case(SHAPE, 2, 2, "invalid", seed=1)
        with pytest.raises(ValueError, match="pdl=True needs a CUDA device of compute capability 9.0"):
            _kernel(x, weights, routing, pdl=True)


@pytest.mark.slow
def test_kernels_compile_for_sm90_with_pipelined_weight_loads():
    """The real (non-interpreted) compile for sm_90, in a subprocess: every kernel of the
    three-launch path for the 30B layer at B=1 and B=64 (gate/up, down, combine, with and
    without PDL; the gate/up and down kernels also with the per-expert hand-off, the down kernel
    also preloaded) fits in shared memory, streams its weights via cp.async and carries
    griddepcontrol exactly where PDL is on (the hand-off down kernel waits on counters instead)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_moe_kernels.py"
    done = subprocess.run([sys.executable, str(script), "--preset", "qwen3-30b-a3b", "--batch", "1", "64", "--kernel",
                           "three_launch"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Per batch gate/up and down with and without PDL and with the hand-off (the down kernel also
    # preloaded), then the combine kernel with and without PDL.
    assert "16 kernels compiled for sm_90" in done.stdout and "PROBLEM" not in done.stdout
