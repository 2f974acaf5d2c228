"""The MoE layer on the GPU at Qwen3 shapes, bf16: our kernel (both paths) and torch._grouped_mm
against the fp32 loop, CUDA-graph capture and replay on new inputs, determinism, the one-launch
kernel's hand-offs and workspace, the routing kernel -> MoE early start, tuned configs on CUDA."""
from types import SimpleNamespace

import pytest
import torch

from oea_trt import OEAConfig, oea_route
from oea_trt.moe import ExpertWeights
from oea_trt.moe.reference import moe_reference
from oea_trt.moe.shapes import get_preset
from oea_trt.routing.synthetic import SkewedRouter
from moe_gpu_cases import assert_bf16_close, capture, decode_batch, route_kernel_or_skip  # noqa: E402

pytestmark = pytest.mark.gpu

@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "qwen3-235b-a22b-tp8"])
def layer(request):
    shape = get_preset(request.param)
    return shape, ExpertWeights.random(shape, device="cuda", seed=11)


def _batch(shape, num_tokens, k0, fill, seed):
    logits = SkewedRouter(shape.num_experts).logits(num_tokens, seed=seed).cuda()
    routing = oea_route(logits, OEAConfig(shape.num_experts, shape.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, shape.hidden_size, device="cuda", dtype=torch.bfloat16,
                    generator=torch.Generator(device="cuda").manual_seed(seed))
    return x, routing


CASES = [(1, 8, "invalid"), (2, 3, "num_experts"), (16, 3, "invalid"), (33, 8, "top1"), (64, 2, "invalid"),
         (100, 5, "invalid")]


@pytest.mark.parametrize("num_tokens,k0,fill", CASES)
def test_triton_matches_reference(layer, num_tokens, k0, fill):
    from oea_trt.moe.triton import fused_moe

    shape, w = layer
    x, r = _batch(shape, num_tokens, k0, fill, seed=num_tokens)
    out = fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask)
    assert_bf16_close(out, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))


@pytest.mark.parametrize("num_tokens,k0,fill", CASES[:5])
def test_grouped_mm_matches_reference(layer, num_tokens, k0, fill):
    from oea_trt.moe.grouped_mm import moe_grouped_mm

    shape, w = layer
    x, r = _batch(shape, num_tokens, k0, fill, seed=num_tokens)
    out = moe_grouped_mm(x, w.w13, w.w2, r.expert_ids, r.weights)
    assert_bf16_close(out, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))


@pytest.mark.parametrize("impl", ["triton", "grouped_mm"])
def test_graph_replay_follows_new_inputs(layer, impl):
    """Captured once (routing inside), replayed on other logits and hidden states: the output must
    be the eager output for the new inputs (nothing routing-dependent was baked in at capture)."""
    from oea_trt.moe.layer import moe_forward

    shape, w = layer
    config = OEAConfig(shape.num_experts, shape.top_k, 3)
    x0, _ = _batch(shape, 16, 3, "invalid", seed=1)
    logits = SkewedRouter(shape.num_experts).logits(16, seed=1).cuda()
    graph, out = capture(lambda: moe_forward(x0, w, oea_route(logits, config), impl=impl))
    for seed in (2, 3):
        x0.copy_(torch.randn(x0.shape, device="cuda", dtype=x0.dtype,
                             generator=torch.Generator(device="cuda").manual_seed(seed)))
        g = torch.Generator(device="cuda").manual_seed(seed)
        logits.copy_(torch.randn(logits.shape, device="cuda", generator=g))
        graph.replay()
        torch.cuda.synchronize()
        eager = moe_forward(x0, w, oea_route(logits, config), impl=impl)
        assert torch.equal(out, eager)  # both paths are deterministic: no atomics on data


def test_grouped_mm_is_deterministic(layer):
    """Prefill runs this path: two runs of one batch must give the same bits (a last-bit
    difference can flip a later near tie of router logits)."""
    from oea_trt.moe.grouped_mm import moe_grouped_mm

    shape, w = layer
    x, r = _batch(shape, 300, 8, "top1", seed=6)
    first = moe_grouped_mm(x, w.w13, w.w2, r.expert_ids, r.weights)
    for _ in range(5):
        assert torch.equal(first, moe_grouped_mm(x, w.w13, w.w2, r.expert_ids, r.weights))


@pytest.mark.parametrize("down", ["slots", "one_launch"])
def test_triton_is_deterministic(layer, down):
    from oea_trt.moe.triton import KernelConfig, fused_moe

    shape, w = layer
    x, r = _batch(shape, 64, 8, "invalid", seed=5)
    a = fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, KernelConfig(down=down))
    for _ in range(5):
        b = fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, KernelConfig(down=down))
        assert torch.equal(a, b)


# ---- the expert-major kernel's launch options (oea_trt/moe/triton/) ------------------------------

#: name -> KernelConfig changes: both paths named explicitly (not through the default, which is
#: one launch up to 16 tokens, with PDL where supported), with and without PDL and early streaming.
TRITON_VARIANTS = {
    "slots": dict(down="slots", pdl=False),
    "slots+pdl": dict(down="slots", pdl=True),
    "one_launch": dict(down="one_launch", pdl=False),
    "one_launch+pdl": dict(down="one_launch", pdl=True),
    "slots+pdl late stream": dict(down="slots", pdl=True, early_stream=False),
    "one_launch+pdl late stream": dict(down="one_launch", pdl=True, early_stream=False),
    "slots+pdl deep tiles": dict(down="slots", pdl=True, gu_block_n=16, gu_block_k=512, dn_block_n=32,
                                 dn_block_k=256),
    "slots+pdl preload": dict(down="slots", pdl=True, dn_preload=True),
    "slots+pdl preload 64x8": dict(down="slots", pdl=True, dn_preload=True, dn_block_n=64, dn_warps=8, dn_stages=2),
    "slots preload no pdl": dict(down="slots", pdl=False, dn_preload=True),
    "slots+pdl handoff": dict(down="slots", pdl=True, handoff=True),
    "slots handoff no pdl": dict(down="slots", pdl=False, handoff=True),
    "slots+pdl preload handoff": dict(down="slots", pdl=True, dn_preload=True, handoff=True),
}


def _triton(x, w, r, **changes):
    from oea_trt.moe.triton import default_config, fused_moe

    base = default_config(x.shape[0], w.hidden_size, w.intermediate_size, r.expert_ids.shape[1], w.num_experts)
    return fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, base.replace(**changes),
                     active_ready=getattr(r, "active_ready", None))


def test_default_is_one_launch_to_16_tokens_then_three_with_pdl_on_hopper():
    from oea_trt.moe.triton import default_config
    from oea_trt.moe.triton.launch import pdl_supported

    cfg = default_config(16, 2048, 768, 8, 128)
    assert cfg.down == "one_launch" and cfg.launches == 1 and cfg.programs_per_sm == 2 and cfg.pdl is None
    cfg = default_config(17, 2048, 768, 8, 128)
    assert cfg.down == "slots" and cfg.launches == 3 and cfg.pdl is None
    assert pdl_supported(torch.device("cuda")) == (torch.cuda.get_device_capability()[0] >= 9)


@pytest.mark.parametrize("variant", list(TRITON_VARIANTS))
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 8, "invalid"), (33, 8, "top1"), (100, 5, "num_experts")])
def test_triton_variants_match_reference(layer, variant, num_tokens, k0, fill):
    shape, w = layer
    x, r = _batch(shape, num_tokens, k0, fill, seed=200 + num_tokens)
    out = _triton(x, w, r, **TRITON_VARIANTS[variant])
    assert_bf16_close(out, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))


@pytest.mark.parametrize("changes", [dict(down="slots", pdl=True), dict(down="one_launch", pdl=True),
                                     dict(down="slots", pdl=True, dn_preload=True, dn_block_n=32),
                                     dict(down="slots", pdl=True, handoff=True),
                                     dict(down="slots", pdl=True, dn_preload=True, dn_block_n=32, handoff=True)],
                         ids=["slots+pdl", "one_launch+pdl", "slots+pdl preload", "slots+pdl handoff",
                              "slots+pdl preload handoff"])
def test_triton_pdl_graph_replay_back_to_back(layer, changes):
    """Several calls in one graph, back to back as in the benchmark (each call's gate/up is a
    programmatic dependent of the previous call's last kernel; buffers of one call are reused
    by the next), routing inside the graph for half of them. Replayed on new logits and hidden
    states, every call's output is bit-identical to the eager call with the same config."""
    shape, w = layer
    config = OEAConfig(shape.num_experts, shape.top_k, 3)
    xs = [_batch(shape, 16, 3, "invalid", seed=300 + i)[0] for i in range(4)]
    logits = [SkewedRouter(shape.num_experts).logits(16, seed=300 + i).cuda() for i in range(4)]
    fixed = [oea_route(lg, OEAConfig(shape.num_experts, shape.top_k, 2)) for lg in logits[2:]]

    def work():
        outs = [_triton(xs[i], w, oea_route(logits[i], config), **changes) for i in range(2)]
        return outs + [_triton(xs[2 + i], w, fixed[i], **changes) for i in range(2)]

    graph, outs = capture(work)
    for seed in (1, 2):
        g = torch.Generator(device="cuda").manual_seed(seed)
        for x in xs:
            x.copy_(torch.randn(x.shape, device="cuda", dtype=x.dtype, generator=g))
        for lg in logits[:2]:
            lg.copy_(torch.randn(lg.shape, device="cuda", generator=g))
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        want = [_triton(xs[i], w, oea_route(logits[i], config), **changes) for i in range(2)]
        want += [_triton(xs[2 + i], w, fixed[i], **changes) for i in range(2)]
        for got, ref in zip(outs, want):
            assert torch.equal(got, ref)
        r = oea_route(logits[0], config)
        assert_bf16_close(outs[0], moe_reference(xs[0], w.w13, w.w2, r.expert_ids, r.weights))


@pytest.mark.parametrize("changes", [dict(), dict(dn_preload=True, dn_block_n=32)], ids=["streamed", "preloaded"])
def test_handoff_random_cases_give_the_same_bits(layer, changes):
    """handoff (each down item waits on its expert's gate/up counter while gate/up still runs):
    40 fresh random batches (1..100 tokens, k0 1..k, every fill mode, grids of 1 to 40 programs
    and one wave), bit-identical to the same config waiting for the whole gate/up kernel, and
    the workspace left zeroed after every call."""
    from oea_trt.moe.triton import sync

    shape, w = layer
    gen = torch.Generator().manual_seed(5151 + len(changes))
    for case in range(40):
        T = int(torch.randint(1, 101, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        x, r = _batch(shape, T, k0, ("invalid", "num_experts", "top1")[case % 3], seed=8000 + case)
        want = _triton(x, w, r, down="slots", pdl=True, **changes)
        for p in (None, (1, 7, 40)[case % 3]):
            got = _triton(x, w, r, down="slots", pdl=True, handoff=True, max_programs=p, **changes)
            assert torch.equal(got, want), (case, T, k0, p)
            torch.cuda.synchronize()
            assert torch.count_nonzero(sync.workspace(torch.device("cuda", torch.cuda.current_device()))) == 0


def test_handoff_and_one_launch_calls_back_to_back_share_the_workspace(layer):
    """One graph of calls with no synchronisation between them, alternating the two users of
    the per-device workspace (sync.py; each lays it out its own way): one launch at 5 tokens,
    the three-launch hand-off at 1 (preloaded), 40 and 100 tokens (two token blocks), one launch
    again. Replayed on new hidden states, every output equals its eager call bit for bit and
    the workspace is left zeroed."""
    from oea_trt.moe.triton import sync

    shape, w = layer
    plan = [(5, dict(down="one_launch", pdl=True)), (1, dict(down="slots", pdl=True, handoff=True, dn_preload=True,
                                                            dn_block_n=32)),
            (40, dict(down="slots", pdl=True, handoff=True)), (100, dict(down="slots", pdl=True, handoff=True)),
            (12, dict(down="one_launch", pdl=True))]
    batches = [_batch(shape, T, 3, "top1", seed=900 + i) for i, (T, _) in enumerate(plan)]

    def work():
        return [_triton(x, w, r, **changes) for (x, r), (_, changes) in zip(batches, plan)]

    graph, outs = capture(work)
    g = torch.Generator(device="cuda").manual_seed(9)
    for x, _ in batches:
        x.copy_(torch.randn(x.shape, device="cuda", dtype=x.dtype, generator=g))
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert torch.count_nonzero(sync.workspace(w.w13.device)) == 0
    for got, (x, r), (T, changes) in zip(outs, batches, plan):
        assert torch.equal(got, _triton(x, w, r, **changes)), (T, changes)


@pytest.mark.parametrize("tile", [dict(dn_block_n=32, dn_warps=4), dict(dn_block_n=64, dn_warps=8, dn_stages=2)],
                         ids=["32x4warps", "64x8warps"])
def test_preloaded_down_tiles_give_the_same_bits(layer, tile):
    """dn_preload: each down program loads its first item's whole w2 tile before it waits for
    gate/up. On 24 fresh random batches (1..64 tokens, k0 1..k, every fill mode), grids of 1 to
    40 programs (so programs with a preloaded first item and streamed later ones), eagerly and
    in graph replays back to back, the output is bit-identical to the streamed down tiles of the
    same width, and the preload stays on where it fits (fitted())."""
    from oea_trt.moe.triton import KernelConfig, fitted

    shape, w = layer
    gen = torch.Generator().manual_seed(4343)
    for case in range(24):
        T = int(torch.randint(1, 65, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        programs = (None, 1, 7, 40)[case % 4]
        x, r = _batch(shape, T, k0, ("invalid", "num_experts", "top1")[case % 3], seed=6000 + case)
        changes = dict(down="slots", pdl=True, max_programs=programs, **tile)
        cfg = fitted(KernelConfig(**changes, dn_preload=True), T, w.hidden_size, w.intermediate_size)
        assert cfg.dn_preload
        streamed = _triton(x, w, r, **changes, dn_block_k=cfg.dn_block_k)
        preloaded = _triton(x, w, r, **changes, dn_preload=True)
        assert torch.equal(preloaded, streamed), (case, T, k0, programs)
    assert_bf16_close(preloaded, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))
    xs = [_batch(shape, 4, 3, "invalid", seed=6100 + i)[0] for i in range(3)]
    routes = [_batch(shape, 4, 3, "invalid", seed=6100 + i)[1] for i in range(3)]
    graph, outs = capture(lambda: [_triton(xs[i], w, routes[i], down="slots", pdl=True, dn_preload=True, **tile)
                                   for i in range(3)])
    g = torch.Generator(device="cuda").manual_seed(6200)
    for x in xs:  # new hidden states: the replay must follow them
        x.copy_(torch.randn(x.shape, device="cuda", dtype=x.dtype, generator=g))
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    for i in range(3):
        assert torch.equal(outs[i], _triton(xs[i], w, routes[i], down="slots", pdl=True, dn_preload=True, **tile))


# ---- the one-launch path of the triton kernel (one_launch.py) ---------------------------------


def _one_launch_into_nan(x, w, r, pdl, **changes):
    """The one-launch path (default tiles, KernelConfig changes, e.g. max_programs for the grid)
    straight through one_launch.launch, into an output poisoned with NaN first (a row no program
    finished stays NaN)."""
    from oea_trt.moe.triton import default_config, fitted, one_launch

    T, k = r.expert_ids.shape
    cfg = fitted(default_config(T, w.hidden_size, w.intermediate_size, k, w.num_experts)
                 .replace(down="one_launch", pdl=pdl, **changes), T, w.hidden_size, w.intermediate_size)
    out = torch.full_like(x, float("nan"))
    one_launch.launch(x, w.w13, w.w2, r.expert_ids.contiguous(), r.weights.contiguous(),
                      r.active_mask.contiguous().view(torch.uint8), out, cfg, pdl)
    torch.cuda.synchronize()
    return out, cfg


def _assert_one_launch_workspace_clean():
    from oea_trt.moe.triton import sync

    torch.cuda.synchronize()
    buf = sync.workspace(torch.device("cuda", torch.cuda.current_device()))
    assert buf is not None and torch.count_nonzero(buf) == 0, "the one-launch workspace was not left zeroed"


@pytest.mark.parametrize("pdl,changes", [(False, {}), (True, {}), (True, dict(early_stream=False))],
                         ids=["plain", "pdl", "pdl+late"])
def test_one_launch_random_cases_against_three_launch_path(layer, pdl, changes):
    """60 fresh random batches (1..100 tokens, k0 1..k, every fill mode): every call finishes
    (a lost hand-off would hang or leave a row unwritten: outputs are poisoned first), matches
    the three-launch path to fp32 rounding of the same slot-ordered sums, and leaves the
    workspace zeroed; also with streaming only after the token list (early_stream=False)."""
    from oea_trt.moe.triton import fused_moe

    shape, w = layer
    gen = torch.Generator().manual_seed(77 + int(pdl) + 2 * len(changes))
    for case in range(20 if changes else 60):  # the default's own path gets the most cases
        T = int(torch.randint(1, 101, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        fill = ("invalid", "num_experts", "top1")[case % 3]
        x, r = _batch(shape, T, k0, fill, seed=1000 + case)
        three = _triton(x, w, r, down="slots", pdl=False, handoff=False)
        out, cfg = _one_launch_into_nan(x, w, r, pdl, **changes)
        assert not torch.isnan(out).any(), f"case {case}: T={T} k0={k0} {fill}: rows left unwritten"
        diff = (out.float() - three.float()).abs().max() / three.float().abs().max()
        assert diff <= 1e-2, (case, T, k0, fill, float(diff))
        _assert_one_launch_workspace_clean()
        assert torch.equal(out, fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, cfg))


@pytest.mark.parametrize("waves", [0, 4])
def test_one_launch_with_one_program_or_more_programs_than_fit(layer, waves):
    """Work goes by ticket: a single program (waves=0) does every item in order; 4 waves of
    programs (most cannot be resident until others exit, so down items wait on gate/up items of
    programs drawn earlier) finish too, with the same bits as the default grid."""
    shape, w = layer
    x, r = _batch(shape, 16, 3, "invalid", seed=5)
    want = _triton(x, w, r, down="one_launch", pdl=False)
    programs = 1 if waves == 0 else waves * 3 * torch.cuda.get_device_properties(0).multi_processor_count
    out, _ = _one_launch_into_nan(x, w, r, False, max_programs=programs)
    assert torch.equal(out, want)
    _assert_one_launch_workspace_clean()


def test_one_launch_workspace_is_not_grown_inside_a_capture(layer):
    """A first call needing more workspace than exists, made while capturing a CUDA graph, is
    refused with a clear message (the graph would keep a buffer the next call cannot see)."""
    from oea_trt.moe.triton import sync

    shape, w = layer
    buf = sync.workspace(w.w13.device)
    words = buf.numel() if buf is not None else 0
    big = max(4096, words) * 4 // shape.top_k  # tokens whose counters alone exceed the buffer
    x = torch.randn(big, shape.hidden_size, device="cuda", dtype=torch.bfloat16)
    ids = torch.zeros(big, shape.top_k, dtype=torch.int32, device="cuda")
    wts = torch.zeros(big, shape.top_k, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="workspace"):
        with torch.cuda.graph(graph):
            _triton(x, w, SimpleNamespace(expert_ids=ids, weights=wts, active_mask=None), down="one_launch")


# ---- routing kernel -> one-launch kernel started on the routing's published active set -------


def test_early_active_random_pairs_match_the_plain_path(layer):
    """40 fresh random decode batches (1..16 tokens, k0 1..k, every fill mode), each routed by the
    kernel with signal=True and followed directly by the one-launch MoE with PDL, which starts on
    the published active set: bit-identical to the same MoE on a routing without the signal,
    every row written (output poisoned), the flag and the workspace left cleared."""
    from oea_trt.moe.triton import default_config, fitted, one_launch

    route_kernel = route_kernel_or_skip()
    shape, w = layer
    gen = torch.Generator().manual_seed(4242)
    for case in range(40):
        T = int(torch.randint(1, 17, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        config = OEAConfig(shape.num_experts, shape.top_k, k0, fill=("invalid", "num_experts", "top1")[case % 3])
        logits, x = decode_batch(shape, T, seed=5000 + case)
        cfg = fitted(default_config(T, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, shape.num_experts)
                     .replace(down="one_launch", pdl=True), T, shape.hidden_size, shape.moe_intermediate_size)
        out = torch.full_like(x, float("nan"))
        r = route_kernel(logits, config, signal=True)
        # Plain top-k (k0 = k) has no piggyback phase: nothing to publish early, no flag.
        assert one_launch.early_active(cfg, T, r.active_ready) == (k0 < shape.top_k)
        one_launch.launch(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask.view(torch.uint8), out, cfg, True,
                          active_ready=r.active_ready)
        torch.cuda.synchronize()
        plain = route_kernel(logits, config)
        assert torch.equal(r.expert_ids, plain.expert_ids) and torch.equal(r.active_mask, plain.active_mask)
        want = _triton(x, w, plain, down="one_launch", pdl=True)
        assert not torch.isnan(out).any(), f"case {case}: T={T} k0={k0}: rows left unwritten"
        assert torch.equal(out, want), f"case {case}: T={T} k0={k0}"
        assert r.active_ready is None or int(r.active_ready[0]) == 0, "the MoE kernel did not clear the flag"
        _assert_one_launch_workspace_clean()
    assert_bf16_close(out, moe_reference(x, w.w13, w.w2, plain.expert_ids, plain.weights))


def test_early_active_graph_replay_back_to_back(layer):
    """Four routing(signal)+MoE pairs in one graph, back to back as in the benchmark (each MoE's
    act and y buffers are the previous call's, written before the routing's rows exist):
    replayed on new logits and hidden states, bit-identical to the plain eager path."""
    route_kernel = route_kernel_or_skip()
    shape, w = layer
    config = OEAConfig(shape.num_experts, shape.top_k, 3)
    batches = [decode_batch(shape, 16, seed=600 + i) for i in range(4)]

    def work():
        return [_triton(x, w, route_kernel(lg, config, signal=True), down="one_launch", pdl=True)
                for lg, x in batches]

    graph, outs = capture(work)
    for seed in (1, 2):
        g = torch.Generator(device="cuda").manual_seed(seed)
        for lg, x in batches:
            x.copy_(torch.randn(x.shape, device="cuda", dtype=x.dtype, generator=g))
            lg.copy_(torch.randn(lg.shape, device="cuda", generator=g))
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        for (lg, x), got in zip(batches, outs):
            assert torch.equal(got, _triton(x, w, route_kernel(lg, config), down="one_launch", pdl=True))
    _assert_one_launch_workspace_clean()


@pytest.mark.parametrize("num_tokens,k0", [(8, 2), (1, 1)])  # (1, 1): fewer items than programs
def test_early_active_flag_reused_or_left_set(layer, num_tokens, k0):
    """A second MoE call on an already consumed routing finds the flag cleared and waits for the
    routing properly (same bits), also where every program's first item is its last (it lets the
    next kernel launch right after the clear); a signalling routing whose MoE call takes the
    three-launch path leaves the flag set, and the next pair is still right (the routing clears
    it first)."""
    route_kernel = route_kernel_or_skip()
    shape, w = layer
    config = OEAConfig(shape.num_experts, shape.top_k, k0)
    (lg1, x1), (lg2, x2), (lg3, x3) = (decode_batch(shape, num_tokens, seed=700 + i) for i in range(3))
    want = [_triton(x, w, route_kernel(lg, config), down="one_launch", pdl=True)
            for lg, x in ((lg1, x1), (lg2, x2), (lg3, x3))]
    r1 = route_kernel(lg1, config, signal=True)
    first = _triton(x1, w, r1, down="one_launch", pdl=True)
    again = _triton(x1, w, r1, down="one_launch", pdl=True)
    r2 = route_kernel(lg2, config, signal=True)
    three = _triton(x2, w, r2, down="slots", pdl=True)
    flag_left = int(r2.active_ready[0])
    third = _triton(x3, w, route_kernel(lg3, config, signal=True), down="one_launch", pdl=True)
    torch.cuda.synchronize()
    assert torch.equal(first, want[0]) and torch.equal(again, want[0]) and torch.equal(third, want[2])
    assert flag_left == 1
    assert_bf16_close(three, want[1])
    _assert_one_launch_workspace_clean()


# ---- tuned configs on CUDA (oea_trt/moe/tuned.py) ---------------------------------------------


def test_moe_forward_runs_the_config_tuned_for_this_gpu(layer, tmp_path, monkeypatch):
    """A tuned file for this GPU and layer shape (here in a temporary package folder) decides the
    config moe_forward runs with on CUDA: the nearest tuned batch's, bit-identical to passing
    that config explicitly; without a file, the heuristic default."""
    from oea_trt.moe import moe_forward, tuned
    from oea_trt.moe.triton import KernelConfig, default_config, fused_moe

    shape, w = layer
    E, H, I, k = shape.num_experts, shape.hidden_size, shape.moe_intermediate_size, shape.top_k
    monkeypatch.setattr(tuned, "TUNED_DIR", str(tmp_path))
    x, r = _batch(shape, 3, 3, "invalid", seed=17)
    assert tuned.config_for(x, w.w13, k) == default_config(3, H, I, k, E)
    configs = {1: KernelConfig(down="slots", gu_block_n=16, dn_block_n=128, max_programs=7),
               64: KernelConfig(block_m=64, down="slots", dn_block_n=128, dn_block_k=64)}
    tuned.write_tuned(tuned.config_path(torch.cuda.get_device_name(), E, H, I, k, w.w13.dtype), configs)
    for tokens, batch in ((3, 1), (40, 64)):  # log2 distance: 3 is nearer 1, 40 nearer 64
        x, r = _batch(shape, tokens, 3, "invalid", seed=17 + tokens)
        assert tuned.config_for(x, w.w13, k) == configs[batch]
        want = fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, configs[batch])
        assert torch.equal(moe_forward(x, w, r), want)
        assert_bf16_close(want, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))
