"""Installing OEA into the MoE modules TensorRT-LLM's PyTorch backend builds, on modules shaped like
TensorRT-LLM 1.2.1's (tests/trtllm_double/.../create_moe.py, loaded here without the rest of the
stand-in): a ConfigurableMoE wrapper, fused routing that never reaches apply(), the run-time
check, and what unused slots hold on expert-parallel paths."""
import importlib.util
from pathlib import Path

import pytest
import torch

from oea_trt.integrations.trtllm_torch import install
from oea_trt.integrations.trtllm_torch.settings import route_packed_batch
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import oea_route, vanilla_route
from oea_trt.routing.synthetic import skewed_logits

CREATE_MOE = Path(__file__).parent / "trtllm_double" / "tensorrt_llm" / "_torch" / "modules" / "fused_moe" / "create_moe.py"
E, K = 16, 4


def _load_shapes():
    spec = importlib.util.spec_from_file_location("trtllm_double_create_moe", CREATE_MOE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _load_shapes()


class StockRouting(torch.nn.Module):
    """Plain top-k, the routing TensorRT-LLM installs (experts_per_token = top_k)."""

    experts_per_token = K

    def apply(self, router_logits):
        r = vanilla_route(router_logits, K, fill="num_experts")
        return r.expert_ids, r.weights


class OEARouting(torch.nn.Module):
    """What OEAMoeRoutingMethod does, on the CPU reference."""

    def __init__(self, config):
        super().__init__()
        self.config, self.calls, self.experts_per_token = config, 0, config.k_max

    def apply(self, router_logits):
        self.calls += 1
        return route_packed_batch(router_logits, self.config, 0, oea_route)


def _experts(kind, ep_size=1, wrapped=True, use_dp=False):
    cls = shapes.BACKENDS[kind]
    kw = dict(routing_method=StockRouting(), num_experts=E, ep_size=ep_size, layer_idx=0)
    extra = {"use_dp": use_dp} if cls is shapes.TRTLLMGenFusedMoE else {}
    return shapes.ConfigurableMoE(backend=cls(**kw, **extra), **kw) if wrapped else cls(**kw, **extra)


CONFIG = OEAConfig(num_experts=E, top_k=K, k0=1)


def test_configurable_moe_routes_with_oea_through_its_backend():
    experts = _experts("CUTLASS")
    site = install.moe_site(experts)
    assert site.wrapped and site.compute is experts.backend
    install.check_installable(site, CONFIG, 0)
    method = OEARouting(CONFIG.replace(fill=install.fill_for(site)))
    install.install_routing(site, method)
    assert experts.routing_method is method and experts.backend.routing_method is method
    x, logits = torch.randn(12, 8), skewed_logits(12, E, seed=4)
    out = experts(x, logits)
    ids, w = oea_route(logits, method.config).expert_ids, oea_route(logits, method.config).weights
    assert method.calls == 1 and torch.allclose(out, experts.backend.compute(x, ids, w))
    van = vanilla_route(logits, K)
    assert not torch.allclose(out, experts.backend.compute(x, van.expert_ids, van.weights))


@pytest.mark.parametrize("wrapped", [True, False])
def test_fused_routing_is_refused(wrapped):
    """TRTLLM-gen routes inside its kernel: in ConfigurableMoE (the old name check saw only the
    wrapper's class) and bare."""
    site = install.moe_site(_experts("TRTLLM", wrapped=wrapped))
    assert not install.routing_reaches_apply(site)
    with pytest.raises(RuntimeError, match=r"layer 3: MoE backend TRTLLMGenFusedMoE.*never calls routing_method.apply"):
        install.check_installable(site, CONFIG, 3)


def test_separated_trtllm_gen_routing_is_accepted_with_real_ids():
    """Under attention DP the wrapper routes with apply() even for TRTLLM-gen; its kernels take
    only real ids, so unused slots repeat an expert the token already has."""
    site = install.moe_site(_experts("TRTLLM", use_dp=True))
    install.check_installable(site, CONFIG, 0)
    assert install.fill_for(site) == "top1"


def test_k_max_must_be_the_models_top_k():
    site = install.moe_site(_experts("CUTLASS"))
    with pytest.raises(ValueError, match=r"layer 2: k_max must equal the model's top_k=4.*got 6"):
        install.check_installable(site, CONFIG.replace(k_max=6), 2)


def test_a_moe_that_never_called_apply_fails_at_its_first_forward():
    """A wrapper whose backend has no routing switch passes the install check; the run-time
    check catches it routing on its own."""

    class OwnRoutingMoE(shapes.MoE):
        def forward(self, x, router_logits):
            values, ids = torch.topk(router_logits, K, dim=-1)
            return self.compute(x, ids, torch.softmax(values, dim=-1))

    class Wrapper(shapes.MoE):
        def __init__(self, backend, **kw):
            super().__init__(**kw)
            self.backend = backend

        def forward(self, x, router_logits):
            return self.backend(x, router_logits)

    kw = dict(routing_method=StockRouting(), num_experts=E)
    site = install.moe_site(Wrapper(OwnRoutingMoE(**kw), **kw))
    install.check_installable(site, CONFIG, 0)
    method = OEARouting(CONFIG)
    install.install_routing(site, method)
    site.experts(torch.randn(5, 8), skewed_logits(5, E, seed=1))
    with pytest.raises(RuntimeError, match="layer 7: the MoE ran over 5 tokens without calling"):
        install.check_routing_applied(method.calls, 5, "layer 7")
    install.check_routing_applied(0, 0, "layer 7")  # an empty batch routes nothing


@pytest.mark.parametrize("kind,ep_size,wrapped,balanced,fill", [
    ("CUTLASS", 1, True, False, "num_experts"),
    ("CUTLASS", 1, False, False, "num_experts"),
    ("CUTLASS", 4, True, False, "top1"),
    ("CUTLASS", 1, True, True, "top1"),
])
def test_fill_follows_how_ids_are_consumed(kind, ep_size, wrapped, balanced, fill):
    experts = _experts(kind, ep_size=ep_size, wrapped=wrapped)
    if balanced:
        experts.layer_load_balancer = object()
    assert install.fill_for(install.moe_site(experts)) == fill


def _a2a_send_counts(ids, ep_size):
    """The all-to-all dispatch's first step: atomicAdd(&send_counters[expert_id / experts_per_rank])."""
    ranks = (ids.long() // (E // ep_size)).reshape(-1)
    return torch.zeros(ep_size, dtype=torch.long).index_add_(0, ranks, torch.ones_like(ranks))


def test_expert_parallel_fill_indexes_only_real_ranks_and_slots():
    """With EP the ids pick target ranks and (load balancer) slots. num_experts indexes past both
    tables; top1 keeps every slot a real expert, changes no output and loads no new expert."""
    ep_size = 4
    logits = skewed_logits(3, E, seed=3)
    fill = install.fill_for(install.moe_site(_experts("CUTLASS", ep_size=ep_size)))
    ep = oea_route(logits, CONFIG.replace(fill=fill))
    single = oea_route(logits, CONFIG.replace(fill="num_experts"))
    assert fill == "top1" and int(ep.expert_ids.min()) >= 0 and int(ep.expert_ids.max()) < E
    assert (single.expert_ids == E).any(), "the case must have unused slots"
    with pytest.raises((IndexError, RuntimeError)):
        _a2a_send_counts(single.expert_ids, ep_size)
    with pytest.raises(IndexError):
        torch.randperm(E)[single.expert_ids.long()]  # expert -> slot table of the load balancer
    assert int(_a2a_send_counts(ep.expert_ids, ep_size).sum()) == ep.expert_ids.numel()
    torch.randperm(E)[ep.expert_ids.long()]
    x = torch.randn(3, 8)
    moe = _experts("CUTLASS", wrapped=False)
    assert torch.allclose(moe.compute(x, ep.expert_ids, ep.weights), moe.compute(x, single.expert_ids, single.weights))
    assert torch.equal(ep.active_mask, single.active_mask)
    assert ((ep.weights == 0) == (single.expert_ids == E)).all()
