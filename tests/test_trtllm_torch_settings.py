"""The PyTorch-backend side of OEA without TensorRT-LLM: settings travel through the environment
to workers, a Qwen3-MoE config gets the right plan, and one packed call routes context rows
with plain top-k and decode rows with OEA, unused slots = num_experts (that backend's sentinel)."""
import json
from types import SimpleNamespace

import pytest
import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import oea_route, vanilla_route
from oea_trt.routing.synthetic import skewed_logits
from oea_trt.integrations.trtllm_torch import settings as ts


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ts.ENV_VAR, raising=False)


def _qwen(**kw):
    base = dict(num_hidden_layers=4, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                mlp_only_layers=[], decoder_sparse_step=1)
    base.update(kw)
    return SimpleNamespace(**base)


def test_settings_round_trip_through_environment():
    import os

    stored = ts.configure(k0=4, k0_schedule=[(8, 3)], layer_k0={0: 8})
    assert json.loads(os.environ[ts.ENV_VAR]) == stored
    plan = ts.routing_plan_for(_qwen())
    assert plan.base.k0 == 4 and plan.base.k0_schedule == ((8, 3),)
    assert plan.base.fill == "num_experts" and plan.base.renormalize is True
    assert plan.k0_by_layer() == {0: 8, 1: 4, 2: 4, 3: 4}
    with pytest.raises(ValueError, match="unknown OEA setting"):
        ts.configure(k1=3)


def test_plan_defaults_and_model_facts():
    plan = ts.routing_plan_for(_qwen(norm_topk_prob=False, mlp_only_layers=[1], num_hidden_layers=3), settings={})
    assert plan.base.k0 == ts.DEFAULT_K0 and plan.base.renormalize is False
    assert plan.moe_layers == (0, 2)


def test_bad_environment_is_reported(monkeypatch):
    monkeypatch.setenv(ts.ENV_VAR, "[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        ts.current_settings()
    monkeypatch.setenv(ts.ENV_VAR, '{"k9": 1}')
    with pytest.raises(ValueError, match="unknown OEA setting"):
        ts.current_settings()


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
def test_packed_call_on_cuda_matches_reference_and_captures_in_a_cuda_graph():
    """What the PyTorch backend runs: route_packed_batch with oea_trt.routing.dispatch.route (the kernel's
    torch op when it loads) on CUDA; equal to the CPU reference, and capturable in a CUDA graph
    for a generation-only batch (how TensorRT-LLM replays decode steps)."""
    from oea_trt.routing.dispatch import route

    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, fill="num_experts")
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
