"""oea_trt.integrations.hf on real transformers Qwen3-MoE models: equality with OEA off, what OEA changes,
padding, decode-batch simulation vs a literal decode loop, generate(), per-layer configs."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from oea_trt import OEAConfig, oea_route  # noqa: E402
from oea_trt.routing.config import ConfigError  # noqa: E402
from oea_trt.integrations.hf import apply_oea, moe_layers, oea_routing  # noqa: E402
from oea_trt.models.random_model import tiny_qwen3_moe  # noqa: E402


def _ids(batch, length, seed=0, vocab=100):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=g)


def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers 4.x
        return DynamicCache()


@pytest.fixture(scope="module")
def model():
    return tiny_qwen3_moe(num_experts=16, top_k=4, num_layers=2)


def test_finds_every_moe_layer(model):
    layers = moe_layers(model)
    assert [layer.index for layer in layers] == [0, 1]
    assert all((l.num_experts, l.top_k, l.norm_topk_prob) == (16, 4, True) for l in layers)
    with pytest.raises(TypeError, match="no Qwen3MoeSparseMoeBlock"):
        moe_layers(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
def test_oea_off_reproduces_the_unpatched_model_exactly(impl):
    try:
        model = tiny_qwen3_moe(experts_implementation=impl)
    except ValueError as exc:
        pytest.skip(str(exc))
    ids = _ids(6, 12)
    with torch.no_grad():
        ref = model(ids).logits
        with apply_oea(model, 4):  # k0 = top_k: vanilla top-k through our routing
            ours = model(ids).logits
        with apply_oea(model, OEAConfig.vanilla(16, 4), mode="generate"):
            ours_generate_mode = model(ids).logits
    assert torch.equal(ours, ref)
    assert torch.equal(ours_generate_mode, ref)


def test_oea_off_with_padding_matches_on_real_tokens(model):
    ids = _ids(5, 10, seed=1)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[3, :2] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        with apply_oea(model, 4):
            ours = model(ids, attention_mask=mask).logits
    real = mask.bool()
    # Padding rows are no longer routed, which changes the experts' GEMM shapes: rounding only.
    torch.testing.assert_close(ours[real], ref[real], rtol=1e-5, atol=1e-5)


def test_oea_reduces_distinct_experts_and_changes_outputs(model):
    ids = _ids(8, 10, seed=2)
    with torch.no_grad():
        with apply_oea(model, None) as h:
            ref = model(ids).logits
            vanilla = h.stats()
        with apply_oea(model, 1) as h:
            oea = model(ids).logits
            stats = h.stats()
    for i in (0, 1):
        assert stats[i]["batches"] == vanilla[i]["batches"] == 10   # one batch per position
        assert stats[i]["tokens"] == 80
        assert stats[i]["mean_active_experts"] < vanilla[i]["mean_active_experts"]
    assert not torch.allclose(oea, ref)


def test_remove_restores_and_double_apply_is_refused(model):
    ids = _ids(3, 7, seed=3)
    with torch.no_grad():
        ref = model(ids).logits
        handle = apply_oea(model, 1)
        with pytest.raises(RuntimeError, match="already applied"):
            apply_oea(model, 2)
        changed = model(ids).logits
        handle.remove()
        handle.remove()  # idempotent
        after = model(ids).logits
        with oea_routing(model, 1):
            inside = model(ids).logits
        outside = model(ids).logits
    assert not torch.equal(changed, ref)
    assert torch.equal(after, ref) and torch.equal(outside, ref)
    assert torch.equal(inside, changed)


def test_padding_never_enters_the_loaded_set(model):
    """If padding joined S_base, what the padded rows hold would change real tokens' routing."""
    ids = _ids(6, 9, seed=4)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[4, :3] = 0
    other = ids.clone()
    other[mask == 0] = _ids(6, 9, seed=99)[mask == 0]  # different garbage under the padding
    with torch.no_grad(), apply_oea(model, 1) as h:
        a = model(ids, attention_mask=mask).logits
        b = model(other, attention_mask=mask).logits
        stats = h.stats()
    real = mask.bool()
    assert not torch.equal(ids, other)
    assert torch.equal(a[real], b[real])
    assert stats[0]["tokens"] == 2 * int(real.sum())  # two forwards, padding not counted


def test_padding_only_positions_are_not_counted_as_batches(model):
    ids = _ids(2, 6, seed=5)
    mask = torch.ones_like(ids)
    mask[:, :2] = 0  # positions 0 and 1 are padding in every sequence
    with torch.no_grad(), apply_oea(model, 2) as h:
        model(ids, attention_mask=mask)
    assert h.stats()[0]["batches"] == 4


def test_decode_sim_equals_a_literal_decode_loop(model):
    """One forward over [B, L] in decode-sim mode == L real decode steps of batch B (KV cache)."""
    B, L = 5, 8
    ids = _ids(B, L, seed=6)
    with torch.no_grad():
        with apply_oea(model, 2, mode="decode-sim") as h:
            sim = model(ids).logits
            sim_stats = h.stats()
        with apply_oea(model, 2, mode="generate") as h:
            cache = _new_cache(model)
            steps = [model(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits for t in range(L)]
            step_stats = h.stats()
    torch.testing.assert_close(sim, torch.cat(steps, 1), rtol=1e-5, atol=1e-5)
    for i in sim_stats:
        assert sim_stats[i]["batches"] == step_stats[i]["batches"] == L
        assert sim_stats[i]["mean_active_experts"] == pytest.approx(step_stats[i]["mean_active_experts"])


def test_decode_batch_cuts_the_forward_batch_into_independent_decode_batches(model):
    ids = _ids(8, 6, seed=7)
    with torch.no_grad():
        with apply_oea(model, 1, decode_batch=4):
            together = model(ids).logits
        with apply_oea(model, 1):
            first, second = model(ids[:4]).logits, model(ids[4:]).logits
        with apply_oea(model, 1):
            one_batch_of_8 = model(ids).logits
    torch.testing.assert_close(together, torch.cat([first, second]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together, one_batch_of_8)


def test_recorded_routing_matches_the_reference_on_each_position(model):
    """The hook routes position t of the B sequences as one oea_route call, nothing else."""
    ids = _ids(4, 5, seed=8)
    cfg = OEAConfig(num_experts=16, top_k=4, k0=2)
    with torch.no_grad(), apply_oea(model, cfg, record_router_logits=True, count_batches=(4,)) as h:
        model(ids)
        stats = h.stats()
        logits = h.router_logits(0)[0]  # [B, L, E]
    expected = [int(oea_route(logits[:, t], cfg).num_active) for t in range(5)]
    assert stats[0]["mean_active_experts"] == pytest.approx(sum(expected) / 5)
    assert stats[0]["active_experts_by_batch"][4] == pytest.approx(sum(expected) / 5)


def test_prune_routing_keeps_exactly_k0_and_loads_the_same_experts_as_oea(model):
    ids = _ids(6, 4, seed=9)
    with torch.no_grad():
        with apply_oea(model, 2, routing="prune", record_router_logits=True, count_batches=(6,)) as h:
            model(ids)
            prune_stats = h.stats()
            first_layer_logits = h.router_logits(0)[0]
        with apply_oea(model, 2, routing="oea") as h:
            model(ids)
            oea_stats = h.stats()
    # Layer 0 sees the same hidden states under both: OEA adds nothing beyond S_base, so T is equal.
    assert prune_stats[0]["mean_active_experts"] == pytest.approx(oea_stats[0]["mean_active_experts"])
    union = [len(set(first_layer_logits[:, t].topk(2, dim=-1).indices.flatten().tolist())) for t in range(4)]
    assert prune_stats[0]["mean_active_experts"] == pytest.approx(sum(union) / 4)


def test_per_layer_configs(model):
    ids = _ids(8, 6, seed=10)
    with torch.no_grad():
        with apply_oea(model, None) as h:
            model(ids)
            vanilla = h.stats()
        with apply_oea(model, {0: 1}) as h:  # layer 1 stays vanilla
            model(ids)
            mixed = h.stats()
            assert h.configs[1].is_vanilla() and h.configs[0].k0 == 1
        with apply_oea(model, [None, OEAConfig(num_experts=16, top_k=4, k0=1)]) as h:
            model(ids)
            listed = h.stats()
    assert mixed[0]["mean_active_experts"] < vanilla[0]["mean_active_experts"]
    assert listed[0]["mean_active_experts"] == pytest.approx(vanilla[0]["mean_active_experts"])
    assert listed[1]["mean_active_experts"] < vanilla[1]["mean_active_experts"]


@pytest.mark.parametrize("spec, message", [
    (OEAConfig(num_experts=32, top_k=4, k0=2), "num_experts"),
    (OEAConfig(num_experts=16, top_k=4, k0=2, renormalize=False), "norm_topk_prob"),
    (9, "k0 must be in"),
    ({5: 2}, "no MoE layer with index"),
    ([1, 2, 3], "per-layer configs"),
    ("3", "expected an OEAConfig"),
])
def test_config_errors(model, spec, message):
    with pytest.raises(ConfigError, match=message):
        apply_oea(model, spec)
    assert not hasattr(model, "_oea_trt_handle")


def test_argument_errors(model):
    with pytest.raises(ValueError, match="mode"):
        apply_oea(model, 2, mode="prefill")
    with pytest.raises(ValueError, match="routing"):
        apply_oea(model, 2, routing="topk")
    with pytest.raises(ValueError, match="decode_batch"):
        apply_oea(model, 2, decode_batch=0)
    with torch.no_grad(), apply_oea(model, 2):
        with pytest.raises(ValueError, match="2-D attention_mask"):
            model(_ids(2, 3), attention_mask=torch.ones(2, 1, 3, 3))


def test_generate_routes_prefill_as_context_and_steps_as_decode(model):
    ids = _ids(4, 6, seed=11)
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # left padding, as for batched generation
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
        with apply_oea(model, 4, mode="generate") as h:
            same = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
            vanilla_stats = h.stats()
        with apply_oea(model, 1, mode="generate") as h:
            model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0)
            oea_stats = h.stats()
    assert torch.equal(same, ref)
    for i in (0, 1):
        # 1 prefill call + 4 decode steps; 22 real prompt tokens + 4 x 4 decode tokens
        assert oea_stats[i]["batches"] == 5 and oea_stats[i]["tokens"] == 22 + 16
        assert oea_stats[i]["mean_active_experts"] < vanilla_stats[i]["mean_active_experts"]


def test_token_kinds():
    from oea_trt.routing.config import CONTEXT, DECODE, PADDING
    from oea_trt.integrations.hf import token_kinds

    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    sim = token_kinds(mask, 2, 3, "decode-sim", torch.device("cpu"))
    assert sim.tolist() == [[PADDING, DECODE, DECODE], [DECODE] * 3]
    gen = token_kinds(mask, 2, 3, "generate", torch.device("cpu"))
    assert gen.tolist() == [[PADDING, CONTEXT, CONTEXT], [CONTEXT] * 3]
    step = token_kinds(mask, 2, 1, "generate", torch.device("cpu"))  # last column only
    assert step.tolist() == [[DECODE], [DECODE]]
    with pytest.raises(ValueError, match="attention_mask has shape"):
        token_kinds(mask, 3, 3, "generate", torch.device("cpu"))


def test_experts_receive_exactly_the_reference_routing(model):
    """What the experts module is handed (transformers 5.x) is oea_route's output, per position."""
    block = model.model.layers[0].mlp
    if isinstance(block.gate, torch.nn.Linear):
        pytest.skip("transformers 4.x: the experts are called inside the replaced block forward")
    seen = {}
    hook = block.experts.register_forward_pre_hook(lambda m, args: seen.update(ids=args[1], w=args[2]))
    B, L = 4, 5
    cfg = OEAConfig(num_experts=16, top_k=4, k0=1, fill="top1")
    try:
        with torch.no_grad(), apply_oea(model, cfg, record_router_logits=True) as h:
            model(_ids(B, L, seed=12))
            logits = h.router_logits(0)[0]
    finally:
        hook.remove()
    ids, w = seen["ids"].view(B, L, 4), seen["w"].view(B, L, 4)
    for t in range(L):
        ref = oea_route(logits[:, t], cfg)
        assert torch.equal(ids[:, t], ref.expert_ids.long())
        assert torch.equal(w[:, t], ref.weights)
    assert (w[..., 1:] == 0).any()  # k0=1 left some slots as weight-0 fill
