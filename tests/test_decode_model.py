"""Our decoder (oea_trt.decode) against transformers' Qwen3-MoE on the CPU: the same tokens and
logits under vanilla and OEA routing, per-layer k0 and a k0 schedule, left padding and dense
layers; every routing call follows the rule; weights are shared, never copied."""
import os

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the decode path is checked against transformers")

from oea_trt import OEAConfig, oea_route  # noqa: E402
from oea_trt.decode import DecodeEngine, DecodeModel, ModelShape, Sampler, from_hf, to_hf  # noqa: E402
from oea_trt.integrations.hf import apply_oea  # noqa: E402
from oea_trt.models.embedded import ROUTER_TRACES  # noqa: E402
from oea_trt.models.random_model import random_decode_model, random_decode_weights  # noqa: E402
from oea_trt.plan.routing_plan import RoutingPlan  # noqa: E402
from oea_trt.routing import CONTEXT, PADDING, ConfigError  # noqa: E402

from decode_reference import (RoutingRecorder, ReplayedRouting, decode_logits, hf_logits,  # noqa: E402
                              relative_error, tokens_agree_up_to_ties)

EMBEDDED = os.path.dirname(ROUTER_TRACES)
PROMPTS = ["def f(x):", "1 + 2 = ", "The quick brown", "abc", '{"a": 1', "MCMX", "GATTACA", "x"]


@pytest.fixture(scope="module")
def embedded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(EMBEDDED, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(EMBEDDED)
    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    return model, enc["input_ids"], enc["attention_mask"]


def _hf_greedy(model, ids, mask, n):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0,
                             eos_token_id=2, temperature=None, top_k=None, top_p=None)
    return out[:, ids.shape[1]:]


@pytest.mark.parametrize("k0", [None, 3])
def test_embedded_model_greedy_tokens_equal_transformers(embedded, k0):
    """fp32, left-padded prompts, end token 2: our engine's tokens are transformers' generate()
    tokens, vanilla (no hooks) and OEA (apply_oea in generate mode routing the same batches)."""
    hf, ids, mask = embedded
    shape, weights = from_hf(hf)
    config = None if k0 is None else OEAConfig(shape.num_experts, shape.top_k, k0)
    result = DecodeEngine(DecodeModel(shape, weights, config)).generate(ids, mask, 16, end_ids=[2], pad_id=0)
    handle = apply_oea(hf, config, mode="generate") if k0 else None
    try:
        want = _hf_greedy(hf, ids, mask, 16)
    finally:
        if handle:
            handle.remove()
    got = result.tokens
    assert got.shape[1] <= want.shape[1]
    assert torch.equal(got, want[:, :got.shape[1]])
    assert result.decode_steps == got.shape[1] - 1 and result.active.shape == (result.decode_steps, 3)


@pytest.fixture(scope="module")
def mixed():
    """A random model with a dense layer between MoE layers, and a routing plan with per-layer
    k0 and a k0 schedule (k0 drops to 1 from 4 decode tokens on)."""
    shape = ModelShape(vocab_size=96, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16,
                       moe_intermediate_size=32, num_experts=16, top_k=4, intermediate_size=48, moe_layers=(0, 2))
    model = random_decode_model(shape, dtype=torch.float32, seed=5, routers="skewed")
    plan = RoutingPlan(base=OEAConfig(16, 4, k0=3, k0_schedule=((4, 2),)), moe_layers=(0, 2), layer_k0={2: 1})
    model.set_routing(plan)
    g = torch.Generator().manual_seed(6)
    ids = torch.randint(3, 96, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[3, :1] = 0
    return shape, model, plan, ids, mask


def test_logits_equal_transformers_with_per_layer_k0_padding_and_a_dense_layer(mixed):
    shape, model, plan, ids, mask = mixed
    with RoutingRecorder(model) as recorded:
        tokens, ours = decode_logits(DecodeEngine(model), ids, mask, 8)
    hf = to_hf(shape, model.weights)
    with apply_oea(hf, {i: plan.config_for_layer(i) for i in (0, 2)}, mode="generate"):
        want = hf_logits(hf, ids, mask, tokens)
    assert (relative_error(ours, want) < 1e-4).all(), relative_error(ours, want)
    # every routing call followed the rule: prefill as context tokens (padding excluded), then
    # decode batches of 5 tokens, k0 from the schedule (2) on layer 0 and the layer's own k0 (1) on layer 2
    kinds = torch.where(mask.bool(), CONTEXT, PADDING).reshape(-1)
    for layer in (0, 2):
        config = plan.config_for_layer(layer)
        calls = recorded.calls[layer]
        assert len(calls) == 8
        for i, (logits, ids_got, weights_got) in enumerate(calls):
            want_route = oea_route(logits, config, kinds if i == 0 else None)
            assert torch.equal(ids_got, want_route.expert_ids)
            torch.testing.assert_close(weights_got, want_route.weights)
        decode_kept = (calls[1][1] >= 0).sum(-1)
        assert decode_kept.min() >= (2 if layer == 0 else 1) and decode_kept.max() <= 4


def test_bf16_logits_agree_under_the_same_routing(embedded):
    """bf16: the two models' arithmetic differs in rounding only, so with transformers replaying
    our routing every step's logits agree to bf16 precision and greedy tokens agree up to near ties."""
    hf32, ids, mask = embedded
    hf = to_hf(*from_hf(hf32)).to(torch.bfloat16)
    shape, weights = from_hf(hf)
    model = DecodeModel(shape, weights, OEAConfig(shape.num_experts, shape.top_k, 3))
    with RoutingRecorder(model) as recorded:
        tokens, ours = decode_logits(DecodeEngine(model), ids, mask, 12)
    with ReplayedRouting(hf, recorded):
        want = hf_logits(hf, ids, mask, tokens)
    errors = relative_error(ours, want)
    assert (errors < 3e-2).all(), errors
    tie = 3e-2 * float(want.abs().max())
    assert tokens_agree_up_to_ties(tokens, want.argmax(-1).T, want, tie) == ""


def test_k0_equal_top_k_is_vanilla_and_small_k0_loads_fewer_experts(mixed):
    shape, model, _, ids, mask = mixed
    engine = DecodeEngine(model)
    engine.set_routing(OEAConfig(16, 4, k0=4))
    a = engine.generate(ids, mask, 6)
    engine.set_routing(None)
    b = engine.generate(ids, mask, 6)
    engine.set_routing(OEAConfig(16, 4, k0=1))
    c = engine.generate(ids, mask, 6)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.active, b.active)
    assert c.active.float().mean() < b.active.float().mean()
    assert (c.active <= 5).all()  # k0=1: at most one expert per decode token


def test_end_tokens_stop_rows_and_the_loop(mixed):
    _, model, _, ids, mask = mixed
    engine = DecodeEngine(model)
    engine.set_routing(None)
    free = engine.generate(ids, mask, 12)
    end = int(free.tokens[0, 2])
    stopped = engine.generate(ids, mask, 12, end_ids=[end], pad_id=0)
    for row, want in zip(stopped.tokens.tolist(), free.tokens.tolist()):
        cut = want.index(end) + 1 if end in want else len(want)
        assert row[:cut] == want[:cut][:len(row)]
        assert all(t == 0 for t in row[cut:])
    assert bool(stopped.finished[0])
    at_first = engine.generate(ids, mask, 40, end_ids=free.tokens[:, 0].tolist(), pad_id=0, check_every=4)
    assert at_first.finished.all() and at_first.decode_steps == 0  # every row ended with its first token
    ends = free.tokens[:, 1].tolist()
    by_second = engine.generate(ids, mask, 40, end_ids=ends, pad_id=0, check_every=4)
    # every row has ended by its second token, so the host stops after one burst of 4 steps
    assert by_second.finished.all() and by_second.decode_steps == (0 if all(t in ends for t in free.tokens[:, 0].tolist())
                                                                    else 4)


def test_routing_must_match_the_model(mixed):
    shape, model, _, _, _ = mixed
    with pytest.raises(ConfigError, match="num_experts=8 but the model's num_experts is 16"):
        model.set_routing(OEAConfig(8, 4, 2))
    with pytest.raises(ConfigError, match="norm_topk_prob"):
        model.set_routing(OEAConfig(16, 4, 2, renormalize=False))
    with pytest.raises(ConfigError, match="2 MoE layers"):
        model.set_routing([OEAConfig(16, 4, 2)])


def test_weights_are_shared_with_transformers_not_copied():
    shape = ModelShape(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                       moe_intermediate_size=16, num_experts=8, top_k=2, tie_word_embeddings=True)
    weights = random_decode_weights(shape, dtype=torch.float32, seed=9)
    hf = to_hf(shape, weights)
    experts = hf.model.layers[1].mlp.experts
    assert experts.gate_up_proj.data_ptr() == weights.layers[1].experts.w13.data_ptr()
    assert hf.model.layers[0].self_attn.v_proj.weight.data_ptr() > weights.layers[0].wqkv.data_ptr()
    back_shape, back = from_hf(hf)
    assert back_shape == shape and back.layers[1].experts.w2.data_ptr() == weights.layers[1].experts.w2.data_ptr()
    ids = torch.randint(50, (2, 5), generator=torch.Generator().manual_seed(1))
    model = DecodeModel(shape, weights)
    tokens, ours = decode_logits(DecodeEngine(model), ids, torch.ones_like(ids), 3, Sampler())
    assert (relative_error(ours, hf_logits(hf, ids, torch.ones_like(ids), tokens)) < 1e-5).all()
