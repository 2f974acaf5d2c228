"""The MoE layer's CPU-testable parts: the loop reference, the alignment step, the
torch._grouped_mm baseline and the layer API (the Triton kernel: test_moe_triton.py)."""
import pytest
import torch
import torch.nn.functional as F

from oea_trt import OEAConfig, oea_route
from oea_trt.moe import ExpertWeights, moe_forward
from oea_trt.moe.grouped_mm import moe_grouped_mm
from oea_trt.moe.grouping import active_mask_from_ids, group_by_expert, pairs_per_expert
from oea_trt.moe.reference import moe_reference
from oea_trt.moe.shapes import MoEShape

TINY = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=32, moe_intermediate_size=16, num_moe_layers=1)


def _random_ids(num_tokens, k, E, seed):
    """Ids with every kind of slot: valid, -1, E (both fill sentinels) and repeats in a row."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, E + 1, (num_tokens, k), generator=g, dtype=torch.int32)


def _literal_moe(x, gate, up, down, ids, weights):
    """Token by token, slot by slot, as Hugging Face's Qwen3MoeSparseMoeBlock describes it
    (float64, no grouping at all)."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(ids.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            if 0 <= e < gate.shape[0]:
                h = F.silu(gate[e] @ x[t]) * (up[e] @ x[t])
                out[t] += float(weights[t, j]) * (down[e] @ h)
    return out


def test_reference_equals_literal_per_slot_sum():
    E, H, I, k, T = 6, 12, 10, 4, 9
    g = torch.Generator().manual_seed(1)
    gate = torch.randn(E, I, H, generator=g, dtype=torch.float64)
    up = torch.randn(E, I, H, generator=g, dtype=torch.float64)
    down = torch.randn(E, H, I, generator=g, dtype=torch.float64)
    x = torch.randn(T, H, generator=g, dtype=torch.float64)
    ids = _random_ids(T, k, E, seed=2)
    ids[0] = torch.tensor([3, 3, -1, E])  # a repeated expert: both weights count
    ids[1] = -1  # nothing selected: output row 0
    weights = torch.rand(T, k, generator=g)
    w = ExpertWeights.from_gate_up_down(gate, up, down)
    out = moe_reference(x, w.w13, w.w2, ids, weights, compute_dtype=torch.float64)
    torch.testing.assert_close(out, _literal_moe(x, gate, up, down, ids, weights), rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(out[1]) == 0


@pytest.mark.parametrize("align", [1, 4])
@pytest.mark.parametrize("seed", range(5))
def test_grouping_sorts_valid_pairs_by_expert(align, seed):
    E, k, T = 7, 3, 11
    ids = _random_ids(T, k, E, seed)
    grouping = group_by_expert(ids, E, align)
    flat = ids.reshape(-1).long()
    valid = (flat >= 0) & (flat < E)
    assert torch.equal(grouping.counts, torch.bincount(flat[valid], minlength=E).int())
    assert torch.equal(grouping.active_mask, grouping.counts > 0)
    assert torch.equal(pairs_per_expert(ids, E), grouping.counts)
    assert torch.equal(active_mask_from_ids(ids, E), grouping.counts > 0)
    assert grouping.rows.numel() == T * k + E * (align - 1)
    start = 0
    for e in range(E):
        end = int(grouping.offsets[e])
        assert (end - start) % align == 0 and end - start >= int(grouping.counts[e])
        group = grouping.rows[start:end]
        real = group[group >= 0]
        # The group holds exactly expert e's pairs, in token order (stable), then padding.
        assert torch.equal(real, torch.nonzero(flat == e).flatten())
        assert torch.all(group[len(real):] == -1)
        start = end
    assert torch.all(grouping.rows[start:] == -1)  # fill pairs belong to no group


def test_grouping_rejects_bad_align():
    with pytest.raises(ValueError, match="align must be >= 1"):
        group_by_expert(torch.zeros(2, 2, dtype=torch.int32), 4, align=0)


def _routed_batch(num_tokens, k0, fill, seed, dtype=torch.bfloat16):
    logits = torch.randn(num_tokens, TINY.num_experts, generator=torch.Generator().manual_seed(seed))
    routing = oea_route(logits, OEAConfig(TINY.num_experts, TINY.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, TINY.hidden_size, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    return x, routing


def _close(out, ref):
    diff = (out.float() - ref.float()).abs().max()
    assert diff <= 2e-2 * ref.float().abs().max(), float(diff)


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch._grouped_mm needs torch >= 2.8")
@pytest.mark.parametrize("align", [1, 8])
@pytest.mark.parametrize("num_tokens,k0,fill", [(1, 4, "invalid"), (6, 2, "num_experts"), (13, 1, "top1")])
def test_grouped_mm_matches_reference(num_tokens, k0, fill, align):
    w = ExpertWeights.random(TINY, seed=3)
    x, routing = _routed_batch(num_tokens, k0, fill, seed=num_tokens)
    ref = moe_reference(x, w.w13, w.w2, routing.expert_ids, routing.weights)
    out = moe_grouped_mm(x, w.w13, w.w2, routing.expert_ids, routing.weights, align=align)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    _close(out, ref)


def test_layer_api_routing_result_equals_explicit_ids():
    w = ExpertWeights.random(TINY, seed=4)
    x, routing = _routed_batch(5, 2, "invalid", seed=9)
    a = moe_forward(x, w, routing, impl="loop")
    b = moe_forward(x, w, expert_ids=routing.expert_ids, routing_weights=routing.weights, impl="loop")
    assert torch.equal(a, b)
    assert torch.equal(moe_forward(x, w, routing), a)  # "auto" on the CPU is the loop


def test_layer_api_errors():
    w = ExpertWeights.random(TINY, seed=4)
    x, routing = _routed_batch(2, 2, "invalid", seed=9)
    with pytest.raises(ValueError, match="not both"):
        moe_forward(x, w, routing, expert_ids=routing.expert_ids)
    with pytest.raises(ValueError, match="needs a RoutingResult"):
        moe_forward(x, w, expert_ids=routing.expert_ids)
    with pytest.raises(ValueError, match="unknown MoE implementation 'cutlass'"):
        moe_forward(x, w, routing, impl="cutlass")
    with pytest.raises(ValueError, match=r"w2 must be \[E=8, H=32, I=16\]"):
        ExpertWeights(w.w13, w.w2[:, :, :8])


def test_expert_weights_layout_and_bytes():
    g = torch.Generator().manual_seed(0)
    gate, up = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    down = torch.randn(3, 6, 4, generator=g)
    w = ExpertWeights.from_gate_up_down(gate, up, down)
    assert torch.equal(w.w13[1, :4], gate[1]) and torch.equal(w.w13[1, 4:], up[1])
    assert (w.num_experts, w.hidden_size, w.intermediate_size) == (3, 6, 4)
    assert w.expert_bytes == 3 * 6 * 4 * 4
    qwen = MoEShape("q", 128, 8, 2048, 768, 48)
    assert ExpertWeights.random(qwen, num_experts=2).expert_bytes == qwen.expert_bytes
