"""The decoder's small operations (oea_trt.decode.ops) round exactly where transformers'
Qwen3-MoE rounds; the masks say who may attend to what; the sampler picks what it should; a
model shape reads a real config."""
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the decode path is checked against transformers")

from oea_trt.decode import QWEN3_30B_A3B, ModelShape, Sampler, ops  # noqa: E402
from oea_trt.plan.hf_config import HFConfigError  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rms_norm_is_transformers_rms_norm_bit_for_bit(dtype):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeRMSNorm

    g = torch.Generator().manual_seed(11)
    x = (3 * torch.randn(5, 7, 64, generator=g)).to(dtype)
    norm = Qwen3MoeRMSNorm(64, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(64, generator=g))
        assert torch.equal(ops.rms_norm(x, norm.weight, 1e-6), norm(x))


def test_rope_is_transformers_rope_bit_for_bit():
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeRotaryEmbedding, apply_rotary_pos_emb

    config = Qwen3MoeConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                            rope_theta=1e6, max_position_embeddings=4096)
    g = torch.Generator().manual_seed(12)
    positions = torch.randint(0, 4000, (3, 5), generator=g)
    q = torch.randn(3, 4, 5, 64, generator=g).to(torch.bfloat16)  # transformers' [B, heads, L, D]
    k = torch.randn(3, 2, 5, 64, generator=g).to(torch.bfloat16)
    cos_ref, sin_ref = Qwen3MoeRotaryEmbedding(config)(q, positions)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    cos, sin = ops.rope_cos_sin(positions, ops.inv_frequencies(64, 1e6), torch.bfloat16)
    assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)
    # ours is [B, L, heads, D]
    assert torch.equal(ops.apply_rope(q.transpose(1, 2), cos, sin), q_ref.transpose(1, 2))
    assert torch.equal(ops.apply_rope(k.transpose(1, 2), cos, sin), k_ref.transpose(1, 2))


def test_prefill_mask_is_causal_over_real_keys_and_never_empty():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    allowed = ops.prefill_mask(mask)[:, 0]
    assert allowed.shape == (2, 4, 4)
    assert torch.equal(allowed[1], torch.ones(4, 4, dtype=torch.bool).tril())
    # a padding query sees only itself, a real query only real keys at or before it
    assert torch.equal(allowed[0], torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool))


def test_decode_key_mask_opens_the_prompt_and_the_written_slots():
    mask = ops.decode_key_mask(torch.tensor([2, 0]), torch.tensor([5]), 8, torch.float32)[:, 0, 0]
    assert mask.shape == (2, 8)
    assert torch.equal(mask == 0, torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool))
    assert torch.isneginf(mask[mask != 0]).all()


def test_grouped_decode_attention_equals_attention_with_repeated_kv_heads():
    g = torch.Generator().manual_seed(13)
    B, Hq, Hkv, S, D = 3, 8, 2, 16, 32
    q = torch.randn(B, Hq, D, generator=g)
    k, v = torch.randn(B, Hkv, S, D, generator=g), torch.randn(B, Hkv, S, D, generator=g)
    pad_start = torch.tensor([0, 3, 7])
    mask = ops.decode_key_mask(pad_start, torch.tensor([11]), S, torch.float32)
    got = ops.grouped_decode_attention(q, k, v, mask)
    kr, vr = k.repeat_interleave(Hq // Hkv, dim=1), v.repeat_interleave(Hq // Hkv, dim=1)
    scores = torch.einsum("bhd,bhsd->bhs", q, kr) / D ** 0.5 + mask[:, 0]
    want = torch.einsum("bhs,bhsd->bhd", scores.softmax(-1), vr).reshape(B, Hq * D)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_greedy_and_degenerate_sampling_pick_the_argmax():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(14))
    want = logits.argmax(-1)
    assert torch.equal(Sampler()(logits), want)
    assert torch.equal(Sampler(temperature=0.7, top_k=1)(logits), want)
    assert torch.equal(Sampler(temperature=2.0, top_p=1e-6)(logits), want)


def test_sampling_follows_the_softmax_and_respects_top_k():
    torch.manual_seed(15)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20000, 1)
    draws = Sampler(temperature=1.0)(logits)
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.015, rtol=0)
    top2 = Sampler(temperature=1.0, top_k=2)(logits)
    assert set(top2.unique().tolist()) == {0, 1}
    nucleus = Sampler(temperature=1.0, top_p=0.7)(logits)  # p = .64, .24, ...: the first two reach 0.7
    assert set(nucleus.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("kw,match", [({"temperature": -1.0}, "temperature"), ({"top_k": -1}, "top_k"),
                                      ({"top_p": 0.0}, "top_p")])
def test_sampler_rejects_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        Sampler(**kw)


def test_shape_reads_the_real_qwen3_30b_config():
    shape = ModelShape.from_hf_config(DATA / "qwen3-30b-a3b" / "config.json")
    assert shape == QWEN3_30B_A3B
    assert shape.expert_bytes() == 3 * 2048 * 768 * 2
    assert shape.qkv_size == 32 * 128 + 2 * 4 * 128 and shape.group_size == 8
    four = shape.with_layers(4)
    assert four.num_layers == 4 and four.moe_layers == (0, 1, 2, 3)


def test_shape_refuses_what_the_decode_path_does_not_do():
    cfg = ModelShape.from_hf_config(DATA / "qwen3-30b-a3b" / "config.json").to_hf_config_dict()
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(HFConfigError, match="RoPE type 'default'"):
        ModelShape.from_hf_config(cfg)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelShape(vocab_size=10, hidden_size=64, num_layers=1, num_heads=6, num_kv_heads=4, head_dim=16,
                   moe_intermediate_size=16, num_experts=4, top_k=2)
