"""The torch reference on CUDA: same results as on the CPU, and capturable in a CUDA graph."""
import pytest
import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import oea_route

from routing_cases import random_case

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("chunk", range(4))
def test_reference_on_cuda_equals_cpu(chunk):
    for seed in range(50_000 + chunk * 100, 50_000 + (chunk + 1) * 100):
        logits, cfg, kinds = random_case(seed)
        cpu = oea_route(logits, cfg, kinds)
        gpu = oea_route(logits.cuda(), cfg, None if kinds is None else kinds.cuda())
        assert torch.equal(gpu.expert_ids.cpu(), cpu.expert_ids), cfg
        torch.testing.assert_close(gpu.weights.cpu(), cpu.weights, rtol=1e-6, atol=1e-7)
        assert torch.equal(gpu.active_mask.cpu(), cpu.active_mask)


def test_reference_is_cuda_graph_capturable():
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, top_p=0.9, fill="top1", k0_schedule=((4, 8), (16, 3)))
    logits = torch.randn(32, 128, device="cuda", dtype=torch.bfloat16)
    kinds = torch.zeros(32, dtype=torch.int32, device="cuda")
    kinds[:5] = 1
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(2):
            oea_route(logits, cfg, kinds)  # warm-up outside capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            captured = oea_route(logits, cfg, kinds)
    for _ in range(3):
        logits.copy_(torch.randn_like(logits))
        graph.replay()
        torch.cuda.synchronize()
        eager = oea_route(logits, cfg, kinds)
        assert torch.equal(captured.expert_ids, eager.expert_ids)
        assert torch.equal(captured.weights, eager.weights)
        assert int(captured.num_active) == int(eager.num_active)
