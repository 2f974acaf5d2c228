"""HF config.json -> Qwen3MoeSpec, on the real Qwen3-30B-A3B / 235B-A22B configs (tests/data)."""
import json
from pathlib import Path

import pytest

from oea_trt.moe.shapes import get_preset
from oea_trt.plan.hf_config import HFConfigError, qwen3_moe_spec

DATA = Path(__file__).parent / "data"
Q30 = DATA / "qwen3-30b-a3b"
Q235 = DATA / "qwen3-235b-a22b"


def _cfg(**changes):
    cfg = json.loads((Q30 / "config.json").read_text())
    cfg.update(changes)
    return cfg


def test_qwen3_30b_a3b_facts():
    s = qwen3_moe_spec(Q30)
    assert (s.num_hidden_layers, s.num_experts, s.top_k) == (48, 128, 8)
    assert (s.hidden_size, s.moe_intermediate_size) == (2048, 768)
    assert (s.num_attention_heads, s.num_key_value_heads, s.head_dim) == (32, 4, 128)
    assert s.norm_topk_prob is True and s.norm_topk_prob_given
    assert s.moe_layers == list(range(48)) and s.dense_layers == []
    assert s.torch_dtype == "bfloat16" and s.eos_token_id == 151645


def test_qwen3_235b_a22b_facts():
    s = qwen3_moe_spec(Q235)
    assert (s.num_hidden_layers, s.num_experts, s.top_k) == (94, 128, 8)
    assert (s.hidden_size, s.moe_intermediate_size) == (4096, 1536)
    assert (s.num_attention_heads, s.num_key_value_heads) == (64, 4)
    assert len(s.moe_layers) == 94


@pytest.mark.parametrize("path,preset", [(Q30, "qwen3-30b-a3b"), (Q235, "qwen3-235b-a22b")])
def test_expert_bytes_agree_with_presets(path, preset):
    """One expert is 9.44 MB (30B) / 37.7 MB (235B) in bf16 (docs/oea-spec.md)."""
    shape = qwen3_moe_spec(path).moe_shape("bfloat16")
    p = get_preset(preset)
    assert shape.expert_bytes == p.expert_bytes
    assert shape.num_moe_layers == p.num_moe_layers
    assert qwen3_moe_spec(path).moe_shape("float32").expert_bytes == 2 * p.expert_bytes


def test_moe_layers_follow_hf_rule():
    """transformers' Qwen3MoeDecoderLayer: sparse iff not in mlp_only_layers and (i+1) % step == 0."""
    s = qwen3_moe_spec(_cfg(num_hidden_layers=8, decoder_sparse_step=2, mlp_only_layers=[3]))
    assert s.moe_layers == [1, 5, 7]
    assert s.dense_layers == [0, 2, 3, 4, 6]


def test_transformers5_field_names_are_accepted():
    cfg = _cfg()
    cfg["num_local_experts"] = cfg.pop("num_experts")
    cfg["dtype"] = cfg.pop("torch_dtype")
    s = qwen3_moe_spec(cfg)
    assert s.num_experts == 128 and s.torch_dtype == "bfloat16"


def test_absent_norm_topk_prob_uses_transformers_default_false():
    cfg = _cfg()
    del cfg["norm_topk_prob"]
    s = qwen3_moe_spec(cfg)
    assert s.norm_topk_prob is False and not s.norm_topk_prob_given


@pytest.mark.parametrize("changes,match", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "not Qwen3-MoE"),
    ({"num_experts_per_tok": 200}, r"num_experts_per_tok must be in \[1, num_experts=128\]"),
    ({"num_experts": 0}, "num_experts must be a positive integer"),
    ({"norm_topk_prob": "yes"}, "norm_topk_prob must be true or false"),
    ({"decoder_sparse_step": 0}, "decoder_sparse_step must be a positive integer"),
    ({"mlp_only_layers": [48]}, r"mlp_only_layers must be a list of layer indices in \[0, 48\)"),
])
def test_bad_configs_say_what_is_wrong(changes, match):
    with pytest.raises(HFConfigError, match=match):
        qwen3_moe_spec(_cfg(**changes))


def test_missing_field_and_missing_file(tmp_path):
    cfg = _cfg()
    del cfg["moe_intermediate_size"]
    with pytest.raises(HFConfigError, match="missing field 'moe_intermediate_size'"):
        qwen3_moe_spec(cfg)
    with pytest.raises(HFConfigError, match="no Hugging Face config"):
        qwen3_moe_spec(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(HFConfigError, match="not valid JSON"):
        qwen3_moe_spec(tmp_path)
