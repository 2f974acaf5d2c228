"""Timing on the GPU: CUDA-graph replay for capturable work, CUDA events for the rest.

A graph holds `calls` back-to-back calls of the work (each on its own rotated copy of the
weights, see rotation.py); one sample is the event-timed replay of the graph `replays` times,
divided by replays * calls. The reported figure is the median of `repeats` samples, with the
spread (max - min) / median so a reader can tell a difference from noise.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, List

import torch


@dataclasses.dataclass(frozen=True)
class Timing:
    median_us: float
    min_us: float
    max_us: float
    samples_us: List[float]

    @property
    def spread(self) -> float:
        return (self.max_us - self.min_us) / self.median_us if self.median_us > 0 else 0.0

    def to_dict(self) -> dict:
        return {"median_us": self.median_us, "min_us": self.min_us, "max_us": self.max_us,
                "spread": self.spread, "samples_us": self.samples_us}


def _summarise(samples: List[float]) -> Timing:
    return Timing(statistics.median(samples), min(samples), max(samples), samples)


def capture_graph(work: Callable[[], object], warmup: int = 2) -> torch.cuda.CUDAGraph:
    """Warm `work` up on a side stream (compiles kernels, fills allocator pools), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return graph


def time_graph(graph: torch.cuda.CUDAGraph, calls: int = 1, repeats: int = 5, replays: int = 3,
               warmup: int = 2) -> Timing:
    """Microseconds per call of a graph that holds `calls` calls."""
    for _ in range(warmup):
        graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / (replays * calls))
    return _summarise(samples)


def time_in_graph(work: Callable[[], object], calls: int = 1, repeats: int = 5, replays: int = 3) -> Timing:
    """Capture `work` (which makes `calls` calls) and time its replay; the graph is freed after."""
    graph = capture_graph(work)
    try:
        return time_graph(graph, calls=calls, repeats=repeats, replays=replays)
    finally:
        del graph


def time_eager(work: Callable[[], object], calls: int = 1, repeats: int = 5, iters: int = 2,
               warmup: int = 1) -> Timing:
    """Microseconds per call, launched from Python (for work that cannot be captured)."""
    for _ in range(warmup):
        work()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            work()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / (iters * calls))
    return _summarise(samples)
