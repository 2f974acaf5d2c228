"""The PyTorch-backend side of OEA without TensorRT-LLM: the settings' form as they travel in
llm_args.model_kwargs, the plan a Qwen3-MoE config gets for the layers TensorRT-LLM built, the
trtllm-serve wrapper's arguments, and one packed call that routes context rows with plain top-k
and decode rows with OEA, unused slots = num_experts (that backend's sentinel)."""
import json
import pickle
from types import SimpleNamespace

import pytest
import torch
import yaml

from oea_trt.integrations.trtllm_torch import serve
from oea_trt.integrations.trtllm_torch import settings as ts
from oea_trt.routing.config import ConfigError, OEAConfig
from oea_trt.routing.reference import oea_route, vanilla_route
from oea_trt.routing.synthetic import skewed_logits


def _qwen(**kw):
    base = dict(num_hidden_layers=4, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                mlp_only_layers=[], decoder_sparse_step=1)
    base.update(kw)
    return SimpleNamespace(**base)


def _worker_config(model_kwargs, **kw):
    """What a worker's model sees: TensorRT-LLM's ModelConfig.from_pretrained sets every
    model_kwargs entry on the pretrained config, after the LLM arguments were pickled to it."""
    config = _qwen(**kw)
    for key, value in pickle.loads(pickle.dumps(model_kwargs)).items():
        setattr(config, key, value)
    return config


def test_settings_travel_in_model_kwargs_to_the_models_config():
    kwargs = ts.with_settings({"num_hidden_layers": 4}, {"k0": 4, "k0_schedule": [(8, 3)], "layer_k0": {0: 8}})
    assert kwargs["num_hidden_layers"] == 4
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON-able: YAML files and config dumps hold it
    config = _worker_config(kwargs)
    plan = ts.routing_plan_for(config, range(4), ts.settings_of(config))
    assert plan.base.k0 == 4 and plan.base.k0_schedule == ((8, 3),)
    assert plan.base.fill == "num_experts" and plan.base.renormalize is True
    assert plan.k0_by_layer() == {0: 8, 1: 4, 2: 4, 3: 4}
    with pytest.raises(ValueError, match="unknown OEA setting"):
        ts.with_settings(None, {"k1": 3})
    with pytest.raises(ValueError, match="pass the OEA settings once"):
        ts.with_settings(kwargs, {"k0": 2})


def test_a_config_without_settings_is_refused_with_what_to_do():
    with pytest.raises(ts.SettingsMissing, match=r"llm_kwargs\(k0=3\)"):
        ts.settings_of(_qwen())
    with pytest.raises(ValueError, match="must be a mapping"):
        ts.settings_of(_qwen(oea_routing=[1, 2]))


def test_plan_defaults_and_model_facts():
    plan = ts.routing_plan_for(_qwen(norm_topk_prob=False), range(4), {})
    assert plan.base.k0 == ts.DEFAULT_K0 and plan.base.renormalize is False


def test_plan_follows_the_layers_tensorrt_llm_built_not_mlp_only_layers():
    """TensorRT-LLM's Qwen3MoEDecoderLayer builds a Qwen3MoE in every layer; a checkpoint with
    mlp_only_layers used to make config_for_layer raise for those layers."""
    config = _qwen(mlp_only_layers=[1], num_hidden_layers=3)
    plan = ts.routing_plan_for(config, [0, 1, 2], {"layer_k0": {1: 5}})
    assert plan.moe_layers == (0, 1, 2) and plan.config_for_layer(1).k0 == 5
    with pytest.raises(ConfigError, match="not MoE layers"):
        ts.routing_plan_for(config, [0, 2], {"layer_k0": {1: 5}})


def test_serve_wrapper_adds_the_settings_to_a_copy_of_the_extra_options(tmp_path):
    user = tmp_path / "extra.yaml"
    user.write_text(yaml.safe_dump({"kv_cache_config": {"free_gpu_memory_fraction": 0.8},
                                    "model_kwargs": {"num_hidden_layers": 4}}))
    before = user.read_text()
    ours, rest = serve.split_args(["--oea-k0", "2", "--oea-layer-k0", "0-1:8", "serve", "/m", "--tp_size", "2",
                                   "--extra_llm_api_options", str(user)])
    argv = serve.serve_argv(rest, serve.oea_settings(ours), tmp_path)
    assert argv[:4] == ["serve", "/m", "--tp_size", "2"] and argv[4] == serve.EXTRA_OPTIONS_FLAG
    options = yaml.safe_load(open(argv[5]))
    assert options["kv_cache_config"] == {"free_gpu_memory_fraction": 0.8}
    assert options["model_kwargs"] == {"num_hidden_layers": 4,
                                       ts.MODEL_KWARGS_KEY: {"k0": 2, "layer_k0": {"0": 8, "1": 8}}}
    assert user.read_text() == before
    argv = serve.serve_argv(["serve", "/m"], serve.oea_settings(serve.split_args([])[0]), tmp_path)
    assert yaml.safe_load(open(argv[-1])) == {"model_kwargs": {ts.MODEL_KWARGS_KEY: {"k0": ts.DEFAULT_K0}}}
    with pytest.raises(ValueError, match="only `trtllm-serve serve MODEL ...` is wrapped"):
        serve.serve_argv(["disaggregated", "-c", "x.yaml"], {}, tmp_path)


def test_packed_call_routes_context_first_rows_vanilla():
    cfg = OEAConfig(num_experts=128, top_k=8, k0=2, fill="num_experts")
    logits = skewed_logits(24, 128, seed=3)
    ids, w = ts.route_packed_batch(logits, cfg, num_context_tokens=8, route=oea_route)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32 and ids.shape == (24, 8)
    van = vanilla_route(logits[:8], 8)
    assert torch.equal(ids[:8], van.expert_ids) and torch.allclose(w[:8], van.weights)
    kinds = torch.cat([torch.ones(8, dtype=torch.int32), torch.zeros(16, dtype=torch.int32)])
    ref = oea_route(logits, cfg, kinds)
    assert torch.equal(ids, ref.expert_ids) and torch.equal(w, ref.weights)
    assert ((ids[8:] == 128) == (w[8:] == 0)).all()  # fill is the num_experts sentinel, weight 0
    # no context rows: every row is a decode token
    ids0, _ = ts.route_packed_batch(logits, cfg, num_context_tokens=0, route=oea_route)
    assert torch.equal(ids0, oea_route(logits, cfg).expert_ids)


@pytest.mark.gpu
@pytest.mark.parametrize("fill", ["num_experts", "top1"])  # single-rank layers / expert-parallel layers
def test_packed_call_on_cuda_matches_reference_and_captures_in_a_cuda_graph(fill):
    """What the PyTorch backend runs: route_packed_batch with oea_trt.routing.dispatch.route (the kernel's
    torch op when it loads) on CUDA; equal to the CPU reference, and capturable in a CUDA graph
    for a generation-only batch (how TensorRT-LLM replays decode steps)."""
    from oea_trt.routing.dispatch import route

    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, fill=fill)
    logits = skewed_logits(48, 128, seed=11)
    ref_ids, ref_w = ts.route_packed_batch(logits, cfg, 16, oea_route)
    ids, w = ts.route_packed_batch(logits.cuda(), cfg, 16, route)
    assert torch.equal(ids.cpu(), ref_ids)
    assert torch.allclose(w.cpu(), ref_w, rtol=1e-6, atol=1e-7)

    static = logits.cuda().clone()
    ts.route_packed_batch(static, cfg, 0, route)  # warm-up outside capture (loads the kernel)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_ids, g_w = ts.route_packed_batch(static, cfg, 0, route)
    fresh = skewed_logits(48, 128, seed=12)
    static.copy_(fresh.cuda())
    graph.replay()
    torch.cuda.synchronize()
    want = oea_route(fresh, cfg)
    assert torch.equal(g_ids.cpu(), want.expert_ids)
    assert torch.allclose(g_w.cpu(), want.weights, rtol=1e-6, atol=1e-7)
