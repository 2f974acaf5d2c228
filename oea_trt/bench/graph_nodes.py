"""How many CUDA-graph nodes one call puts in a graph: each kernel node costs a launch slot and,
when it depends on the previous one, a drain and a ramp: the fixed per-layer cost that OEA's
smaller T cannot remove.

The graph is captured with torch (keep_graph=True) and its nodes listed with cuda-python
(cuda.bindings.runtime), which the GPU box has. Where that fails, the kernels, memsets and
copies of one eager call are counted with torch's profiler instead (each would be one node);
the reason is kept. Never raises.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch


def count_nodes(work: Callable[[], object]) -> dict:
    """{"nodes": n, "kinds": {node type: count}} for the graph of one call of `work`, or
    {"error": why}."""
    if not torch.cuda.is_available():
        return {"error": "no CUDA device"}
    try:
        from cuda.bindings import runtime as cudart

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            work()  # compile and allocate outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph(keep_graph=True)
        with torch.cuda.graph(graph):
            work()
        handle = cudart.cudaGraph_t(init_value=graph.raw_cuda_graph())
        err, _, num = cudart.cudaGraphGetNodes(handle, 0)
        _ok(err, "cudaGraphGetNodes")
        err, nodes, num = cudart.cudaGraphGetNodes(handle, num)
        _ok(err, "cudaGraphGetNodes")
        kinds = Counter()
        for node in nodes[:num]:
            err, kind = cudart.cudaGraphNodeGetType(node)
            _ok(err, "cudaGraphNodeGetType")
            kinds[getattr(kind, "name", str(kind)).replace("cudaGraphNodeType", "")] += 1
        del graph
        return {"nodes": int(num), "kinds": dict(kinds)}
    except Exception as exc:  # noqa: BLE001 (a missing count must not stop the benchmark)
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        return dict(_profiled(work), graph_error=reason)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{reason}; profiler: {type(exc).__name__}: {str(exc)[:200]}"}


def _profiled(work: Callable[[], object]) -> dict:
    """Device activities of one eager call of `work` (after a warm-up call), by torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    work()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        work()
        torch.cuda.synchronize()
    kinds, names = Counter(), []
    for event in prof.events():
        kind = str(getattr(event, "device_type", ""))
        if "CUDA" not in kind:
            continue
        name = event.name
        label = "Memset" if "memset" in name.lower() else "Memcpy" if "memcpy" in name.lower() else "Kernel"
        kinds[label] += 1
        names.append(name[:80])
    return {"nodes": sum(kinds.values()), "kinds": dict(kinds), "names": names, "source": "profiler"}


def _ok(err, what: str) -> None:
    code = err[0] if isinstance(err, tuple) else err
    if int(code) != 0:
        raise RuntimeError(f"{what} failed: {code}")
