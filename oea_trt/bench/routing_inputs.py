"""Router logits for benchmarks: uniform, skewed (calibrated), or recorded traces from a model run.

Every source answers draw(batch, seed) -> float32 [batch, E] logits on the CPU; the same
(batch, seed) always gives the same logits, so variants (vanilla, OEA at each k0) are timed on
identical batches.

Trace files (what an instrumented model run records): router logits [num_layers, tokens, E]
(or [tokens, E] for one layer) in a .pt file (a tensor, or a dict with key "router_logits", as
oea_trt.eval.traces.dump_traces writes) or a .npz file (array "router_logits", else its only
array). A draw picks a layer (seed mod num_layers) and a decode batch of it: a decode batch
holds one token of each of `batch` different requests, never consecutive tokens of one. When
the file says how its tokens form sequences (dump_traces' "sequence_shape" [N, L], tokens
sequence-major), the batch is `batch` consecutive sequences at one position, as in the paper's
simulation; otherwise `batch` distinct tokens at random.
"""
from __future__ import annotations

import os
from typing import Dict

import torch

from oea_trt.routing.synthetic import GENERATORS

#: A routing mode read from a file of recorded router logits (--trace).
TRACE = "trace"
#: Every routing mode: the synthetic kinds of oea_trt.routing.synthetic, then recorded traces.
MODES = (*GENERATORS, TRACE)


class TraceError(ValueError):
    """A trace file that is missing, unreadable or of the wrong shape."""


class SyntheticSource:
    """Logits of one of oea_trt.routing.synthetic's generators (uniform, skewed)."""

    def __init__(self, name: str, num_experts: int):
        self.name = name
        self.num_experts = num_experts

    def draw(self, batch: int, seed: int) -> torch.Tensor:
        return GENERATORS[self.name](batch, self.num_experts, seed=seed)


class TraceSource:
    name = TRACE

    def __init__(self, path: str, num_experts: int):
        self.path = path
        self.logits = load_trace(path)
        if self.logits.shape[-1] != num_experts:
            raise TraceError(f"trace {path} has {self.logits.shape[-1]} experts per row, the layer has "
                             f"E={num_experts}: record the trace from a model with the same expert count")
        self.num_layers, self.num_tokens = self.logits.shape[0], self.logits.shape[1]
        self.sequence_shape = trace_sequence_shape(path, self.num_tokens)

    def draw(self, batch: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        layer = self.logits[seed % self.num_layers]
        if self.sequence_shape is not None:
            n, length = self.sequence_shape
            if batch > n:
                raise TraceError(f"trace {self.path} holds {n} sequences, fewer than batch {batch}")
            start = int(torch.randint(n - batch + 1, (1,), generator=g))
            position = int(torch.randint(length, (1,), generator=g))
            return layer.view(n, length, -1)[start:start + batch, position].float()
        if batch > self.num_tokens:
            raise TraceError(f"trace {self.path} has {self.num_tokens} tokens per layer, fewer than batch {batch}")
        return layer[torch.randperm(self.num_tokens, generator=g)[:batch]].float()


def load_trace(path: str) -> torch.Tensor:
    """float32 [num_layers, tokens, E] from a .pt or .npz trace file (see module doc)."""
    if not os.path.isfile(path):
        raise TraceError(f"trace file {path} does not exist")
    if path.endswith(".npz"):
        import numpy as np

        with np.load(path) as data:
            keys = list(data.keys())
            if "router_logits" in keys:
                array = data["router_logits"]
            elif len(keys) == 1:
                array = data[keys[0]]
            else:
                raise TraceError(f"trace {path} holds arrays {keys}; name the logits 'router_logits'")
        logits = torch.from_numpy(array)
    elif path.endswith(".pt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (any unreadable file is the user's to fix)
            raise TraceError(f"cannot read trace {path}: {exc}") from None
        if isinstance(obj, dict):
            if "router_logits" not in obj:
                raise TraceError(f"trace {path} is a dict without key 'router_logits' (keys: {sorted(obj)})")
            obj = obj["router_logits"]
        if not isinstance(obj, torch.Tensor):
            raise TraceError(f"trace {path} must hold a tensor of router logits, got {type(obj).__name__}")
        logits = obj
    else:
        raise TraceError(f"trace file must end in .pt or .npz, got {path}")
    if logits.dim() == 2:
        logits = logits[None]
    if logits.dim() != 3 or logits.shape[1] < 1:
        raise TraceError(f"trace {path} must be router logits [num_layers, tokens, E] or [tokens, E], got shape "
                         f"{tuple(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise TraceError(f"trace {path} must hold floating-point logits, got {logits.dtype}")
    return logits.float()


def trace_sequence_shape(path: str, num_tokens: int):
    """(N, L) from a .pt trace dict's "sequence_shape" when it matches its token count, else None."""
    if not path.endswith(".pt"):
        return None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    shape = obj.get("sequence_shape") if isinstance(obj, dict) else None
    if shape is None:
        return None
    n, length = (int(v) for v in shape)
    if n * length != num_tokens:
        raise TraceError(f"trace {path}: sequence_shape {n}x{length} does not match its {num_tokens} tokens per layer")
    return n, length


def make_sources(modes, num_experts: int, trace_path: str = None) -> Dict[str, object]:
    """{mode: source} for routing modes of MODES (trace needs trace_path)."""
    sources = {}
    for mode in modes:
        if mode in GENERATORS:
            sources[mode] = SyntheticSource(mode, num_experts)
        elif mode == TRACE:
            if not trace_path:
                raise TraceError("routing mode 'trace' needs a trace file (--trace PATH.pt|.npz)")
            sources[mode] = TraceSource(trace_path, num_experts)
        else:
            raise ValueError(f"unknown routing mode {mode!r}; choose from {', '.join(MODES)}")
    return sources
