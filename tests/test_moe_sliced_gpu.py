"""The sliced MoE kernel (oea_trt/moe/triton/sliced.py) on the GPU at Qwen3 shapes, bf16: against
the fp32 loop on fresh random routings, every row written, the same bits for any grid and on
every call, started on the routing kernel's published active set (eager and in CUDA-graph
replays back to back), and the workspace left zeroed."""
import pytest
import torch

from oea_trt import OEAConfig, oea_route
from oea_trt.moe import ExpertWeights
from oea_trt.moe.reference import moe_reference
from oea_trt.moe.shapes import get_preset
from moe_gpu_cases import assert_bf16_close, capture, decode_batch, route_kernel_or_skip

pytestmark = pytest.mark.gpu

#: (slice width, gate/up K step, down step): the default and the widths the benchmark times.
TILES = [None, (16, 256, 128), (32, 128, 128), (16, 256, 512), (64, 128, 256)]


@pytest.fixture(scope="module", params=["qwen3-30b-a3b", "qwen3-235b-a22b-tp8"])
def layer(request):
    shape = get_preset(request.param)
    return shape, ExpertWeights.random(shape, device="cuda", seed=12)


def sliced_config(shape, num_tokens, tiles=None, **changes):
    from oea_trt.moe.triton import default_config

    cfg = default_config(num_tokens, shape.hidden_size, shape.moe_intermediate_size, shape.top_k,
                         shape.num_experts).replace(down="sliced", **changes)
    if tiles is not None:
        cfg = cfg.replace(gu_block_n=tiles[0], gu_block_k=tiles[1], dn_block_n=tiles[2])
    return cfg


def run_sliced(x, w, r, cfg, active_ready=None):
    """The sliced kernel into an output poisoned with NaN (a row no program wrote stays NaN)."""
    from oea_trt.moe.triton import fitted, sliced
    from oea_trt.moe.triton.launch import pdl_supported

    T = x.shape[0]
    cfg = fitted(cfg, T, w.hidden_size, w.intermediate_size, top_k=r.expert_ids.shape[1])
    use_pdl = pdl_supported(x.device) if cfg.pdl is None else cfg.pdl
    out = torch.full_like(x, float("nan"))
    sliced.launch(x, w.w13, w.w2, r.expert_ids.contiguous(), r.weights.contiguous(),
                  r.active_mask.contiguous().view(torch.uint8), out, cfg, use_pdl, active_ready=active_ready)
    return out


def assert_workspace_clean():
    from oea_trt.moe.triton import sync

    buf = sync.workspace(torch.device("cuda", torch.cuda.current_device()))
    torch.cuda.synchronize()
    assert buf is not None and torch.count_nonzero(buf) == 0, "the workspace was not left zeroed"


@pytest.mark.parametrize("tiles", TILES, ids=lambda t: "default" if t is None else "x".join(map(str, t)))
def test_random_routings_match_reference(layer, tiles):
    """Fresh random decode batches (1..64 tokens, k0 1..k, every fill mode): within bf16
    tolerance of the fp32 loop, every row written, two calls bit-identical."""
    shape, w = layer
    gen = torch.Generator().manual_seed(77 + (0 if tiles is None else tiles[0]))
    for case in range(12):
        T = int(torch.randint(1, 65, (1,), generator=gen)) if case % 2 else int(torch.randint(1, 9, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        fill = ("invalid", "num_experts", "top1")[case % 3]
        logits, x = decode_batch(shape, T, seed=900 + case)
        r = oea_route(logits, OEAConfig(shape.num_experts, shape.top_k, k0, fill=fill))
        cfg = sliced_config(shape, T, tiles)
        out = run_sliced(x, w, r, cfg)
        again = run_sliced(x, w, r, cfg)
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), f"case {case}: T={T} k0={k0}: rows left unwritten"
        assert torch.equal(out, again), f"case {case}: T={T} k0={k0}: two calls differ"
        assert_bf16_close(out, moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights))
        assert_workspace_clean()


@pytest.mark.parametrize("programs", [1, 7, 100000])
def test_any_grid_gives_the_same_bits(layer, programs):
    """One program doing every item, a few, or far more programs than can be resident: the
    same bits as the one-wave default (items go by ticket; waits only on earlier tickets)."""
    shape, w = layer
    logits, x = decode_batch(shape, 5, seed=31)
    r = oea_route(logits, OEAConfig(shape.num_experts, shape.top_k, 3))
    want = run_sliced(x, w, r, sliced_config(shape, 5))
    got = run_sliced(x, w, r, sliced_config(shape, 5, max_programs=programs))
    torch.cuda.synchronize()
    assert torch.equal(got, want)
    assert_workspace_clean()


def test_early_active_random_pairs_match_the_plain_path(layer):
    """30 fresh decode batches (1..16 tokens, k0 1..k, every fill mode), each routed by the
    kernel with signal=True and followed directly by the sliced kernel with PDL, which starts on
    the published active set: bit-identical to the same kernel after a plain routing, every row
    written, the flag and the workspace left cleared."""
    route_kernel = route_kernel_or_skip()
    shape, w = layer
    gen = torch.Generator().manual_seed(4343)
    for case in range(30):
        T = int(torch.randint(1, 17, (1,), generator=gen))
        k0 = int(torch.randint(1, shape.top_k + 1, (1,), generator=gen))
        config = OEAConfig(shape.num_experts, shape.top_k, k0, fill=("invalid", "num_experts", "top1")[case % 3])
        logits, x = decode_batch(shape, T, seed=6000 + case)
        cfg = sliced_config(shape, T, pdl=True)
        r = route_kernel(logits, config, signal=True)
        out = run_sliced(x, w, r, cfg, active_ready=r.active_ready)
        torch.cuda.synchronize()
        plain = route_kernel(logits, config)
        want = run_sliced(x, w, plain, cfg)
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), f"case {case}: T={T} k0={k0}: rows left unwritten"
        assert torch.equal(out, want), f"case {case}: T={T} k0={k0}"
        assert r.active_ready is None or int(r.active_ready[0]) == 0, "the MoE kernel did not clear the flag"
        assert_workspace_clean()
    assert_bf16_close(out, moe_reference(x, w.w13, w.w2, plain.expert_ids, plain.weights))


def test_early_active_graph_replay_back_to_back(layer):
    """Four routing(signal)+sliced MoE pairs in one graph, back to back (each call's partial rows
    are the previous call's buffer): replayed on new logits and hidden states, bit-identical to
    the plain eager path."""
    from oea_trt.moe.triton import fused_moe

    route_kernel = route_kernel_or_skip()
    shape, w = layer
    config = OEAConfig(shape.num_experts, shape.top_k, 3)
    batches = [decode_batch(shape, T, seed=610 + T) for T in (1, 4, 16, 3)]

    def call(x, r):
        return fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask,
                         sliced_config(shape, x.shape[0], pdl=True), active_ready=r.active_ready)

    def work():
        return [call(x, route_kernel(lg, config, signal=True)) for lg, x in batches]

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
            assert torch.equal(got, call(x, route_kernel(lg, config)))
    assert_workspace_clean()
