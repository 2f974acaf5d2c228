"""Invariants of OEA routing (docs/oea-spec.md 'Invariants'), checked on random cases."""
import numpy as np
import pytest
import torch

from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import oea_route, scores_and_ranking, topk_prune_route, vanilla_route
from oea_trt.routing.stats import routing_stats, selected_mask

from routing_cases import random_case

SEEDS = range(10_000, 10_400)


def _kinds(token_kind, T):
    return torch.zeros(T, dtype=torch.int32) if token_kind is None else token_kind


@pytest.mark.parametrize("seed", SEEDS)
def test_invariants_hold(seed):
    logits, cfg, token_kind = random_case(seed, max_tokens=128)
    T, E = logits.shape
    kinds = _kinds(token_kind, T)
    result = oea_route(logits, cfg, token_kind)
    # Selections are read from the fill="invalid" run (unambiguous); the fill test below checks
    # that every fill mode holds the same selections.
    plain = oea_route(logits, cfg.replace(fill="invalid"), token_kind)
    assert torch.equal(plain.weights, result.weights) and torch.equal(plain.active_mask, result.active_mask)
    selections = [row[row >= 0].tolist() for row in plain.expert_ids]
    scores, order, finite = scores_and_ranking(logits)
    decode = kinds == DECODE
    k0 = cfg.k0_for(int(decode.sum()))

    loaded = set()
    for i in range(T):
        if kinds[i] == DECODE:
            n_i = min(k0, cfg.k_max)
            loaded.update(e for e, ok in zip(order[i, :n_i].tolist(), finite[i, :n_i].tolist()) if ok)
        elif kinds[i] == CONTEXT and cfg.piggyback_on_context:
            loaded.update(e for e, ok in zip(order[i, : cfg.top_k].tolist(), finite[i, : cfg.top_k].tolist()) if ok)

    for i, sel in enumerate(selections):
        assert len(sel) <= cfg.k_max and len(set(sel)) == len(sel)
        if kinds[i] == DECODE:
            # Top-n_i kept, in rank order (top_p can only shorten the baseline).
            ranked = [e for e, ok in zip(order[i].tolist(), finite[i].tolist()) if ok]
            n = min(k0, cfg.k_max, len(ranked))
            if cfg.top_p >= 1:
                assert sel[:n] == ranked[:n]
            else:
                assert sel[:1] == ranked[:1]
            # Everything a decode token holds beyond its baseline was already loaded.
            assert set(sel) <= loaded | set(ranked[:n])
            assert [ranked.index(e) for e in sel] == sorted(ranked.index(e) for e in sel)
        elif kinds[i] == CONTEXT:
            ranked = [e for e, ok in zip(order[i].tolist(), finite[i].tolist()) if ok]
            assert sel == ranked[: cfg.top_k]
        else:
            assert sel == [] and float(result.weights[i].abs().sum()) == 0.0

    # Weights: renormalized rows sum to 1, raw rows equal the softmax scores; fill slots are 0.
    assert float(plain.weights[plain.expert_ids < 0].abs().sum()) == 0.0
    for i, sel in enumerate(selections):
        if not sel:
            continue
        w = result.weights[i, : len(sel)]
        if cfg.renormalize:
            assert abs(float(w.sum()) - 1.0) < 1e-5
        else:
            torch.testing.assert_close(w, scores[i, sel], rtol=1e-6, atol=0)

    # Active set: exactly the selected experts; padding never enters it.
    active = set(e for sel in selections for e in sel)
    assert set(torch.nonzero(result.active_mask).flatten().tolist()) == active
    assert int(result.num_active) == len(active) == routing_stats(result, cfg, kinds).active_experts
    if cfg.fill != "top1":  # under top1 an all-NaN decode row's fill looks like a selection
        assert routing_stats(result, cfg, kinds).experts_per_token.tolist() == [len(s) for s in selections]

    # OEA never touches more experts than vanilla routing of the same tokens.
    if cfg.k_max == cfg.top_k and cfg.top_p >= 1:
        vanilla = oea_route(logits, OEAConfig.vanilla(E, cfg.top_k, fill=cfg.fill), token_kind)
        assert int(result.num_active) <= int(vanilla.num_active)


@pytest.mark.parametrize("seed", range(40))
def test_k0_equal_k_is_vanilla(seed):
    logits, cfg, token_kind = random_case(seed)
    cfg = cfg.replace(k_max=cfg.top_k, k0=cfg.top_k, top_p=1.0, k0_schedule=None)
    a = oea_route(logits, cfg, token_kind)
    kinds = torch.full((logits.shape[0],), CONTEXT, dtype=torch.int32)
    if token_kind is not None:  # padding stays padding; every real token routes vanilla
        kinds = torch.where((token_kind == 0) | (token_kind == 1), kinds, token_kind)
    b = oea_route(logits, cfg, kinds)
    assert torch.equal(a.expert_ids, b.expert_ids) and torch.equal(a.weights, b.weights)
    c = vanilla_route(logits, cfg.top_k, cfg.renormalize, cfg.fill)
    if token_kind is None:
        assert torch.equal(a.expert_ids, c.expert_ids) and torch.equal(a.weights, c.weights)


def test_vanilla_matches_torch_topk_without_ties():
    torch.manual_seed(0)
    x = torch.randn(64, 128)
    r = vanilla_route(x, 8)
    p = torch.softmax(x, -1)
    w, i = torch.topk(p, 8)
    assert torch.equal(r.expert_ids.long(), i)
    torch.testing.assert_close(r.weights, w / w.sum(-1, keepdim=True))
    r = vanilla_route(x.bfloat16(), 8, renormalize=False)
    w, i = torch.topk(torch.softmax(x.bfloat16().float(), -1), 8)
    torch.testing.assert_close(r.weights, w)


@pytest.mark.parametrize("seed", range(40))
def test_one_decode_token_is_topk0_pruning(seed):
    logits, cfg, _ = random_case(seed)
    if logits.shape[0] == 0:
        return
    one = logits[:1]
    a = oea_route(one, cfg)
    b = topk_prune_route(one, cfg)
    assert torch.equal(a.expert_ids, b.expert_ids) and torch.equal(a.weights, b.weights)


@pytest.mark.parametrize("seed", range(40))
def test_padding_never_enters_the_loaded_set(seed):
    logits, cfg, _ = random_case(seed)
    T = logits.shape[0]
    if T < 2:
        return
    kinds = torch.zeros(T, dtype=torch.int32)
    kinds[T // 2:] = 2
    with_padding = oea_route(logits, cfg, kinds)
    without = oea_route(logits[: T // 2], cfg)
    assert torch.equal(with_padding.active_mask, without.active_mask)
    assert torch.equal(with_padding.expert_ids[: T // 2], without.expert_ids)


@pytest.mark.parametrize("seed", range(30))
def test_permuting_tokens_permutes_rows(seed):
    """The output is a pure function of the batch as a set: thread or row order cannot matter."""
    logits, cfg, token_kind = random_case(seed, max_tokens=64)
    T = logits.shape[0]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(T)).long()
    a = oea_route(logits, cfg, token_kind)
    b = oea_route(logits[perm], cfg, None if token_kind is None else token_kind[perm])
    assert torch.equal(a.expert_ids[perm], b.expert_ids)
    torch.testing.assert_close(a.weights[perm], b.weights, rtol=1e-6, atol=0)


def test_fill_modes_agree_on_selections_and_differ_only_in_fill():
    torch.manual_seed(1)
    x = torch.randn(12, 64)
    x[3] = float("nan")
    kinds = torch.tensor([0] * 8 + [1, 1, 2, 2], dtype=torch.int32)
    base = OEAConfig(num_experts=64, top_k=6, k0=2, max_rank=10)
    out = {f: oea_route(x, base.replace(fill=f), kinds) for f in ("invalid", "num_experts", "top1")}
    valid = out["invalid"].expert_ids >= 0
    for f, r in out.items():
        assert torch.equal(r.expert_ids[valid], out["invalid"].expert_ids[valid])
        assert torch.equal(r.weights, out["invalid"].weights)
    assert bool((out["num_experts"].expert_ids[~valid] == 64).all())
    top1 = out["top1"].expert_ids
    lowest_active = int(torch.nonzero(out["invalid"].active_mask)[0])
    for i in range(12):
        expected_fill = int(top1[i, 0]) if bool(valid[i, 0]) else lowest_active
        assert bool((top1[i][~valid[i]] == expected_fill).all())
    assert top1[3].tolist() == [lowest_active] * 6 and top1[10].tolist() == [lowest_active] * 6
    # A fill never adds an expert to the batch.
    assert torch.equal(out["top1"].active_mask, out["invalid"].active_mask)


def test_top1_fill_with_nothing_active_is_expert_zero():
    x = torch.full((3, 16), float("nan"))
    r = oea_route(x, OEAConfig(num_experts=16, top_k=2, k0=1, fill="top1"))
    assert r.expert_ids.tolist() == [[0, 0]] * 3 and int(r.num_active) == 0
    assert float(r.weights.abs().sum()) == 0.0


def test_nan_is_minus_inf_and_minus_inf_is_never_selected():
    x = torch.tensor([[float("nan"), 1.0, float("-inf"), 0.5], [float("-inf")] * 3 + [2.0]])
    r = oea_route(x, OEAConfig(num_experts=4, top_k=3, k0=3))
    assert r.expert_ids.tolist() == [[1, 3, -1], [3, -1, -1]]
    torch.testing.assert_close(r.weights[1], torch.tensor([1.0, 0.0, 0.0]))


def test_ties_go_to_the_lower_expert_index():
    x = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]]).bfloat16()
    assert oea_route(x, OEAConfig(num_experts=5, top_k=2, k0=2)).expert_ids.tolist() == [[1, 2]]


def test_k0_schedule_picks_largest_applicable_entry():
    cfg = OEAConfig(num_experts=32, top_k=4, k0=4, k0_schedule=((8, 2), (3, 3)))
    assert cfg.k0_schedule == ((3, 3), (8, 2))
    assert [cfg.k0_for(n) for n in (0, 2, 3, 7, 8, 100)] == [4, 4, 3, 3, 2, 2]
    torch.manual_seed(0)
    for n in (2, 3, 8):
        x = torch.randn(n, 32)
        # The schedule counts decode tokens only: context tokens added below do not change k0.
        kinds = torch.tensor([0] * n + [1] * 5, dtype=torch.int32)
        xx = torch.cat([x, torch.randn(5, 32)])
        got = oea_route(xx, cfg, kinds)
        want = oea_route(xx, cfg.replace(k0=cfg.k0_for(n), k0_schedule=None), kinds)
        assert torch.equal(got.expert_ids, want.expert_ids)


def test_top_p_shortens_the_baseline():
    x = torch.tensor([[10.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    cfg = OEAConfig(num_experts=4, top_k=2, k0=2, max_rank=1, top_p=0.9)
    r = oea_route(x, cfg)
    # Token 0's top-1 already holds > 90% of the mass; token 1 needs 4 experts (capped at k0=2).
    assert r.expert_ids.tolist() == [[0, -1], [0, 1]]


def test_context_tokens_route_vanilla_and_feed_piggybacking():
    x = torch.tensor([[5.0, 4.0, 0.0, 0.0], [0.0, 5.0, 4.0, 0.0]])
    kinds = torch.tensor([0, 1], dtype=torch.int32)
    on = OEAConfig(num_experts=4, top_k=2, k0=1)
    assert oea_route(x, on, kinds).expert_ids.tolist() == [[0, 1], [1, 2]]
    off = on.replace(piggyback_on_context=False)
    assert oea_route(x, off, kinds).expert_ids.tolist() == [[0, -1], [1, 2]]


def test_empty_batch():
    r = oea_route(torch.empty(0, 16), OEAConfig(num_experts=16, top_k=4, k0=2))
    assert r.expert_ids.shape == (0, 4) and r.weights.shape == (0, 4)
    assert int(r.num_active) == 0 and not bool(r.active_mask.any())
