"""Helpers for the MoE GPU tests (test_moe_gpu.py): the bf16 tolerance
against the fp32 loop, a skewed decode batch, the routing kernel or a skip, and a CUDA-graph
capture that hands back the captured call's outputs."""
import pytest
import torch

from oea_trt.routing.synthetic import SkewedRouter

#: bf16 against the fp32 loop: max error within 2% of max |ref|, RMS error within 1% of RMS.
MAX_TOL, RMS_TOL = 2e-2, 1e-2


def assert_bf16_close(out, ref):
    diff = out.float() - ref.float()
    max_err = float(diff.abs().max() / ref.float().abs().max())
    rms_err = float(diff.pow(2).mean().sqrt() / ref.float().pow(2).mean().sqrt())
    assert max_err <= MAX_TOL and rms_err <= RMS_TOL, (max_err, rms_err)


def decode_batch(shape, num_tokens, seed):
    """(skewed router logits [T, E] fp32, hidden states [T, H] bf16) on the GPU."""
    logits = SkewedRouter(shape.num_experts).logits(num_tokens, seed=seed).cuda()
    x = torch.randn(num_tokens, shape.hidden_size, device="cuda", dtype=torch.bfloat16,
                    generator=torch.Generator(device="cuda").manual_seed(seed))
    return logits, x


def route_kernel_or_skip():
    from oea_trt.routing.dispatch import kernel_available

    if not kernel_available():
        pytest.skip("the routing kernel library is unavailable here")
    from oea_trt.routing.kernel import route_kernel

    return route_kernel


def capture(work):
    """(graph, outputs of the captured call): work() once on a side stream (compiles, sizes
    workspaces), then captured (oea_trt.bench.timing.capture_graph)."""
    from oea_trt.bench.timing import capture_graph

    outs = []
    graph = capture_graph(lambda: outs.append(work()), warmup=1)
    return graph, outs[-1]
