"""oea_trt.eval: cross-entropy, intervals and the (B, k0) sweep on a tiny random Qwen3-MoE."""
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from oea_trt.eval import evaluate, format_table, oea_beats_pruning, sequence_ce  # noqa: E402
from oea_trt.eval.intervals import paired_bootstrap_ci, standard_error  # noqa: E402
from oea_trt.eval.sweep import forward_chunk  # noqa: E402
from oea_trt.models.random_model import tiny_qwen3_moe  # noqa: E402


@pytest.fixture(scope="module")
def sweep():
    model = tiny_qwen3_moe(num_experts=16, top_k=4, num_layers=2)
    ids = torch.randint(4, 100, (8, 10), generator=torch.Generator().manual_seed(0))
    return evaluate(model, ids, batches=(2, 8), k0s=(1, 2, 4))


def test_sequence_ce_matches_torch_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, 11, generator=g)
    ids = torch.randint(0, 11, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, :3] = 0  # padded start: targets 1..3 and the first real token's prediction drop out
    ce = sequence_ce(logits, ids, mask)
    for b in range(3):
        start = 3 if b == 2 else 0
        want = torch.nn.functional.cross_entropy(logits[b, start:-1], ids[b, start + 1:])
        assert float(ce[b]) == pytest.approx(float(want), rel=1e-6)


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    deltas = 0.05 + 0.01 * rng.standard_normal(64)
    lo, hi = paired_bootstrap_ci(deltas)
    assert lo < deltas.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * standard_error(deltas), rel=0.2)
    assert (lo, hi) == paired_bootstrap_ci(deltas)  # seeded
    assert np.isnan(paired_bootstrap_ci(np.array([1.0]))[0])


def test_forward_chunk_is_a_multiple_of_every_batch():
    assert forward_chunk((4, 16, 64), 64) == 64
    assert forward_chunk((4, 16, 64), 200) == 192
    assert forward_chunk((3, 5), 64) == 60
    assert forward_chunk((3, 5), 1) == 15


def test_rows_cover_every_routing_batch_and_k0(sweep):
    keys = {(r.routing, r.batch, r.k0) for r in sweep}
    assert keys == ({("vanilla", b, 4) for b in (2, 8)} | {("oea", b, k) for b in (2, 8) for k in (1, 2, 4)}
                    | {("prune", b, k) for b in (2, 8) for k in (1, 2, 4)})


def test_vanilla_and_k0_equal_top_k_cost_nothing(sweep):
    for r in sweep:
        if r.routing == "vanilla" or r.k0 == 4:
            assert r.delta_ce == 0.0
            assert r.active_experts == pytest.approx(r.vanilla_active_experts)


def test_lower_k0_loads_fewer_experts(sweep):
    for routing in ("oea", "prune"):
        for b in (2, 8):
            t = {r.k0: r.active_experts for r in sweep if r.routing == routing and r.batch == b}
            assert t[1] < t[2] < t[4]
    for r in sweep:
        assert r.active_experts <= r.vanilla_active_experts + 1e-9


def test_oea_and_pruning_load_the_same_experts_in_the_first_layer(sweep):
    """Same hidden states in layer 0, and OEA adds only experts already in S_base (= what
    pruning loads): T must agree there, counted two different ways (routing vs selections)."""
    prune = {(r.batch, r.k0): r for r in sweep if r.routing == "prune"}
    for r in sweep:
        if r.routing == "oea":
            assert r.active_experts_per_layer[0] == pytest.approx(prune[(r.batch, r.k0)].active_experts_per_layer[0])


def test_pruning_does_not_depend_on_the_batch(sweep):
    by_k0 = {}
    for r in sweep:
        if r.routing == "prune":
            by_k0.setdefault(r.k0, set()).add(r.delta_ce)
    assert all(len(v) == 1 for v in by_k0.values())


def test_table_and_verdict(sweep):
    text = format_table(sweep)
    assert "B=2:" in text and "B=8:" in text and "OEA - prune [95% CI]" in text
    verdict = oea_beats_pruning(sweep)
    assert set(verdict) == {f"B={b},k0={k}" for b in (2, 8) for k in (1, 2)}


def test_bad_inputs():
    model = tiny_qwen3_moe(num_experts=8, top_k=2, num_layers=1)
    ids = torch.randint(4, 100, (6, 5))
    with pytest.raises(ValueError, match="multiple of every batch size"):
        evaluate(model, ids, batches=(4,))
    with pytest.raises(ValueError, match=r"k0 values must be in \[1, top_k=2\]"):
        evaluate(model, ids, batches=(2,), k0s=(3,))


def test_oea_options_reach_the_router():
    """max_rank=1 forbids every piggyback: OEA must then equal top-k0 pruning exactly."""
    model = tiny_qwen3_moe(num_experts=16, top_k=4, num_layers=2)
    ids = torch.randint(4, 100, (8, 8), generator=torch.Generator().manual_seed(5))
    rows = evaluate(model, ids, batches=(4,), k0s=(1, 2), oea_options={"max_rank": 1})
    prune = {r.k0: r for r in rows if r.routing == "prune"}
    for r in rows:
        if r.routing == "oea":
            assert r.delta_ce == prune[r.k0].delta_ce
            assert r.active_experts_per_layer == prune[r.k0].active_experts_per_layer
    default = evaluate(model, ids, batches=(4,), k0s=(1,))
    assert [r.delta_ce for r in default if r.routing == "oea"] != [prune[1].delta_ce]


def test_oea_minus_pruning_is_paired_and_judged_by_its_interval(sweep):
    prune = {(r.batch, r.k0): r for r in sweep if r.routing == "prune"}
    for r in sweep:
        if r.routing != "oea":
            assert r.vs_prune is None and r.vs_prune_verdict is None
            continue
        p = prune[(r.batch, r.k0)]
        assert r.vs_prune == pytest.approx(r.delta_ce - p.delta_ce, abs=1e-12)
        assert r.vs_prune_ci_low <= r.vs_prune <= r.vs_prune_ci_high
        expected = "better" if r.vs_prune_ci_high < 0 else "worse" if r.vs_prune_ci_low > 0 else "tie"
        assert r.vs_prune_verdict == expected
        if r.k0 == 4:  # both are vanilla: no difference at all
            assert r.vs_prune == 0.0 and r.vs_prune_verdict == "tie"
