"""The pure-PyTorch runtime (transformers Qwen3-MoE + our routing) on a tiny random model:
OEA off equals transformers, OEA with k0 = top_k equals OEA off, OEA with small k0 loads fewer
experts per step, and engine directories fall back to it with their routing plan."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the PyTorch fallback needs transformers")

from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.runtime import Generation, SamplingOptions, open_runtime  # noqa: E402
from oea_trt.runtime.torch_fallback import HFRuntime  # noqa: E402
from oea_trt.plan.config_file import engine_config_dict, write_engine_config  # noqa: E402
from oea_trt.plan.routing_plan import RoutingPlan  # noqa: E402

PROMPTS = ["hello world", "abc", "The quick brown fox", "1 + 2 = ", "MoE", "zz top", "route me", "x"]
TOP_K = 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from oea_trt.data import VOCAB, save_hf_tokenizer

    d = tmp_path_factory.mktemp("tiny-qwen3-moe")
    torch.manual_seed(1234)
    cfg = Qwen3MoeConfig(vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         num_experts=16, num_experts_per_tok=TOP_K, norm_topk_prob=True,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False)
    model = Qwen3MoeForCausalLM(cfg)
    with torch.no_grad():  # a sharper router than the init's, so different k0 route differently
        for layer in model.model.layers:
            layer.mlp.gate.weight.mul_(20.0)
    model.save_pretrained(str(d))
    save_hf_tokenizer(str(d))
    return str(d)


def _greedy_reference(tiny_dir, prompts, n):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=2,
                             temperature=None, top_k=None, top_p=None)
    return out[:, enc["input_ids"].shape[1]:].tolist()


def _ids(gens):
    return [g.token_ids for g in gens]


def test_oea_off_equals_transformers(tiny_dir):
    opts = SamplingOptions(max_new_tokens=6)
    with open_runtime(tiny_dir, oea=False, device="cpu") as rt:
        assert isinstance(rt, HFRuntime) and rt.routing is None
        got = rt.generate(PROMPTS, opts)
    ref = _greedy_reference(tiny_dir, PROMPTS, 6)
    for g, r in zip(got, ref):
        assert isinstance(g, Generation)
        assert g.token_ids == [t for t in r][: len(g.token_ids)]
        assert len(g.token_ids) == 6 or g.finished


def test_k0_equal_top_k_is_vanilla(tiny_dir):
    opts = SamplingOptions(max_new_tokens=6)
    with open_runtime(tiny_dir, oea=False, device="cpu") as off, open_runtime(tiny_dir, k0=TOP_K, device="cpu") as vanilla:
        assert vanilla.routing.is_vanilla()
        assert _ids(vanilla.generate(PROMPTS, opts)) == _ids(off.generate(PROMPTS, opts))


def test_small_k0_loads_fewer_experts(tiny_dir):
    opts = SamplingOptions(max_new_tokens=5)
    with open_runtime(tiny_dir, k0=TOP_K, device="cpu") as vanilla, open_runtime(tiny_dir, k0=1, device="cpu") as oea:
        assert oea.routing.base.k0 == 1 and oea.routing.base.renormalize  # norm_topk_prob=true
        out = oea.generate(PROMPTS, opts)
        vanilla.generate(PROMPTS, opts)
        s_oea, s_van = oea.routing_stats(), vanilla.routing_stats()
    assert len(out) == len(PROMPTS) and all(isinstance(g.text, str) for g in out)
    assert all(len(g.token_ids) == 5 or g.finished for g in out)
    assert set(s_oea) == {0, 1, 2}
    for layer in s_oea:
        # Same number of routed steps (1 prefill + 4 decode), never more experts than vanilla.
        assert s_oea[layer]["batches"] == s_van[layer]["batches"] == 5
        assert s_oea[layer]["mean_active_experts"] <= s_van[layer]["mean_active_experts"]
    assert any(s_oea[l]["mean_active_experts"] < s_van[l]["mean_active_experts"] for l in s_oea)


def test_per_layer_k0_reaches_every_layer(tiny_dir):
    with open_runtime(tiny_dir, k0=3, layer_k0={0: 1, 2: TOP_K}, device="cpu") as rt:
        assert {i: c.k0 for i, c in rt.handle.configs.items()} == {0: 1, 1: 3, 2: TOP_K}
        assert rt.generate("abc", SamplingOptions(max_new_tokens=2))[0].prompt == "abc"


def test_engine_directory_falls_back_with_its_plan(tiny_dir, tmp_path):
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"pretrained_config": {}, "build_config": {}}))
    plan = RoutingPlan(base=OEAConfig(num_experts=16, top_k=TOP_K, k0=2, fill="invalid"), moe_layers=(0, 1, 2),
                       layer_k0={1: 3})
    write_engine_config(str(engine), engine_config_dict(plan, build={}, model={"hf_dir": tiny_dir}))
    with open_runtime(str(engine), backend="pytorch", device="cpu") as rt:
        assert rt.backend == "pytorch" and rt.routing == plan
        assert {i: c.k0 for i, c in rt.handle.configs.items()} == {0: 2, 1: 3, 2: 2}
    with open_runtime(str(engine), backend="pytorch", k0=1, device="cpu") as rt:  # k0 override at load
        assert {i: c.k0 for i, c in rt.handle.configs.items()} == {0: 1, 1: 1, 2: 1}
    with pytest.raises(ValueError, match="backend must be one of"):
        open_runtime(str(engine), backend="vllm", device="cpu")


def test_sampling_runs_and_bad_options_are_rejected(tiny_dir):
    with open_runtime(tiny_dir, k0=2, device="cpu") as rt:
        out = rt.generate(PROMPTS[:3], SamplingOptions(max_new_tokens=4, temperature=0.8, top_k=5, seed=7))
        assert len(out) == 3
        with pytest.raises(ValueError, match="prompts must be a non-empty list"):
            rt.generate([], SamplingOptions())
    for kw, match in [({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1.0}, "temperature"),
                      ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k")]:
        with pytest.raises(ValueError, match=match):
            SamplingOptions(**kw)


# ---- the fast decode path (DecodeRuntime), here on the CPU with eager steps ------------------


def test_backends_pick_the_runtime(tiny_dir):
    from oea_trt.runtime.fast_decode import DecodeRuntime

    with open_runtime(tiny_dir, device="cpu") as auto, open_runtime(tiny_dir, backend="pytorch-decode",
                                                                    device="cpu") as fast:
        assert isinstance(auto, HFRuntime) and auto.implementation == "transformers"
        assert isinstance(fast, DecodeRuntime) and fast.implementation == "oea-decode" and fast.backend == "pytorch"


@pytest.mark.parametrize("k0", [TOP_K, 2])
def test_fast_decode_runtime_equals_the_transformers_runtime(tiny_dir, k0):
    """Greedy, left-padded prompts of different lengths, OEA routing (k0 = top_k: vanilla): the
    same tokens, texts and routed batches as transformers + apply_oea, and both time the call."""
    opts = SamplingOptions(max_new_tokens=6)
    with open_runtime(tiny_dir, k0=k0, device="cpu") as slow, \
            open_runtime(tiny_dir, k0=k0, backend="pytorch-decode", device="cpu") as fast:
        want, got = slow.generate(PROMPTS, opts), fast.generate(PROMPTS, opts)
        assert [g.token_ids for g in got] == [g.token_ids for g in want]
        assert [g.text for g in got] == [g.text for g in want] and [g.finished for g in got] == [g.finished for g in want]
        s_fast, s_slow = fast.routing_stats(), slow.routing_stats()
        for rt in (slow, fast):
            timing = rt.last_timing
            assert timing.batch == len(PROMPTS) and timing.decode_steps == 5 and timing.tpot_ms > 0
            assert timing.tokens_per_s == pytest.approx(len(PROMPTS) * 5 / timing.decode_s)
    assert set(s_fast) == set(s_slow) == {0, 1, 2}
    for layer in s_fast:
        assert s_fast[layer]["batches"] == s_slow[layer]["batches"] == 6
        assert s_fast[layer]["mean_active_experts"] == pytest.approx(s_slow[layer]["mean_active_experts"])


def test_fast_decode_runtime_uses_the_engine_plan_and_samples(tiny_dir, tmp_path):
    engine = tmp_path / "engine"
    engine.mkdir()
    plan = RoutingPlan(base=OEAConfig(num_experts=16, top_k=TOP_K, k0=2), moe_layers=(0, 1, 2), layer_k0={1: 3})
    write_engine_config(str(engine), engine_config_dict(plan, build={}, model={"hf_dir": tiny_dir}))
    with open_runtime(str(engine), backend="pytorch-decode", device="cpu") as rt:
        assert rt.routing == plan
        assert {i: c.k0 for i, c in rt.model.configs.items()} == {0: 2, 1: 3, 2: 2}
        first = rt.generate(PROMPTS[:3], SamplingOptions(max_new_tokens=5, temperature=0.9, top_k=8, seed=3))
        again = rt.generate(PROMPTS[:3], SamplingOptions(max_new_tokens=5, temperature=0.9, top_k=8, seed=3))
    assert [g.token_ids for g in first] == [g.token_ids for g in again]  # seeded
    assert all(len(g.token_ids) == 5 or g.finished for g in first)
