"""The vectorized reference must equal the literal per-token oracle on thousands of random cases.

Ids bit-exact; weights within float32 rounding (the oracle computes softmax in float64)."""
import numpy as np
import pytest
import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import oea_route

from oracle import oracle_route
from routing_cases import random_case

NUM_CASES = 2400
CHUNKS = 8


def check_against_oracle(logits, cfg, token_kind):
    result = oea_route(logits, cfg, token_kind)
    ids, weights, active = oracle_route(logits.float().numpy(), cfg, None if token_kind is None else token_kind.numpy())
    T = logits.shape[0]
    assert result.expert_ids.dtype == torch.int32 and result.weights.dtype == torch.float32
    assert tuple(result.expert_ids.shape) == (T, cfg.k_max)
    assert result.expert_ids.tolist() == ids, f"ids differ for {cfg}"
    np.testing.assert_allclose(result.weights.numpy(), np.array(weights, dtype=np.float64).reshape(T, cfg.k_max),
                               rtol=2e-6, atol=1e-7)
    assert torch.nonzero(result.active_mask).flatten().tolist() == active
    assert int(result.num_active) == len(active)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_reference_equals_oracle_on_random_cases(chunk):
    per_chunk = NUM_CASES // CHUNKS
    for seed in range(chunk * per_chunk, (chunk + 1) * per_chunk):
        logits, cfg, kinds = random_case(seed)
        check_against_oracle(logits, cfg, kinds)


def test_sweep_covers_every_knob():
    """The random sweep must actually exercise each knob (a guard against a silently narrow sweep)."""
    seen = {"top_p": 0, "max_rank": 0, "k_max": 0, "schedule": 0, "no_renorm": 0, "no_ctx_pig": 0,
            "fills": set(), "dtypes": set(), "kinds": 0, "nan": 0, "big_T": 0, "E": set(), "T0": 0}
    for seed in range(NUM_CASES):
        logits, cfg, kinds = random_case(seed)
        seen["top_p"] += cfg.top_p < 1
        seen["max_rank"] += cfg.max_rank < cfg.num_experts
        seen["k_max"] += cfg.k_max > cfg.top_k
        seen["schedule"] += cfg.k0_schedule is not None
        seen["no_renorm"] += not cfg.renormalize
        seen["no_ctx_pig"] += not cfg.piggyback_on_context
        seen["fills"].add(cfg.fill)
        seen["dtypes"].add(logits.dtype)
        seen["kinds"] += kinds is not None and bool((kinds != 0).any())
        seen["nan"] += bool(torch.isnan(logits).any())
        seen["big_T"] += logits.shape[0] > 256
        seen["T0"] += logits.shape[0] == 0
        seen["E"].add(cfg.num_experts)
    for key in ("top_p", "max_rank", "k_max", "schedule", "no_renorm", "no_ctx_pig", "kinds", "nan", "big_T", "T0"):
        assert seen[key] >= 20, (key, seen[key])
    assert seen["fills"] == {"invalid", "num_experts", "top1"}
    assert len(seen["dtypes"]) == 3 and seen["E"] == {8, 64, 128, 256}


def test_worked_example_piggyback_only_on_loaded_experts():
    """Two tokens, E=4, k=2, k0=1. Token 0 ranks 0,3,1,2 and loads 0; token 1 ranks 3,1,2,0
    and loads 3; S_base = {0, 3}. Token 0's second choice (3) is loaded: it piggybacks. Token 1
    walks past 1 and 2 (not loaded) down to rank 4, expert 0; with max_rank=2 it stops at rank 2."""
    logits = torch.tensor([[4.0, 1.0, 0.0, 3.0], [0.0, 2.0, 1.0, 5.0]])
    cfg = OEAConfig(num_experts=4, top_k=2, k0=1)
    r = oea_route(logits, cfg)
    assert r.expert_ids.tolist() == [[0, 3], [3, 0]]
    assert int(r.num_active) == 2
    shallow = cfg.replace(max_rank=2)
    assert oea_route(logits, shallow).expert_ids.tolist() == [[0, 3], [3, -1]]
    for c in (cfg, shallow):
        check_against_oracle(logits, c, None)
