"""Router-logit traces of a real model run, for MoE benchmarks that want real routing.

dump_traces(model, input_ids, path) runs the model once with vanilla routing and saves, with
torch.save, a dict:
    "router_logits": float32 [num_layers, num_sequences * seq_len, num_experts], tokens in
        sequence-major order (row s * seq_len + t is token t of sequence s): the layout
        oea_trt.bench.routing_inputs.load_trace reads,
    "sequence_shape": [num_sequences, seq_len]; with it, decode batch t of size B (the paper's
        simulation) is router_logits[layer].view(N, L, E)[s:s+B, t] (see decode_batches),
    "input_ids": int64 [num_sequences, seq_len], "domains": list of str (one per sequence),
    "layers": decoder layer index of each MoE layer, "num_experts", "top_k", "norm_topk_prob",
    "model": where the model came from, "format": "oea-trt router traces v1".
Load with torch.load(path) (plain tensors and Python values, weights_only-safe).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from oea_trt.integrations.hf import apply_oea, moe_layers

TRACE_FORMAT = "oea-trt router traces v1"


@torch.inference_mode()
def record_router_logits(model, input_ids: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """float32 CPU [num_layers, N, L, E] router logits under vanilla routing."""
    device = next(model.parameters()).device
    with apply_oea(model, None, record_router_logits=True) as handle:
        for s in range(0, input_ids.shape[0], chunk):
            model(input_ids=input_ids[s:s + chunk].to(device))
        per_layer = [torch.cat(handle.router_logits(i)) for i in sorted(handle.layers)]
    return torch.stack(per_layer)


def dump_traces(model, input_ids: torch.Tensor, path: str, domains: Optional[Sequence[str]] = None,
                source: str = "") -> dict:
    logits = record_router_logits(model, input_ids)
    layers = moe_layers(model)
    n, length = input_ids.shape
    payload = {
        "format": TRACE_FORMAT,
        "router_logits": logits.reshape(logits.shape[0], n * length, logits.shape[-1]).contiguous(),
        "sequence_shape": [n, length],
        "input_ids": input_ids.cpu(),
        "domains": list(domains) if domains is not None else None,
        "layers": [layer.index for layer in layers],
        "num_experts": layers[0].num_experts,
        "top_k": layers[0].top_k,
        "norm_topk_prob": layers[0].norm_topk_prob,
        "model": source,
    }
    torch.save(payload, path)
    return payload


def load_traces(path: str) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != TRACE_FORMAT:
        raise ValueError(f"{path!r} is not an oea-trt router trace file (expected format {TRACE_FORMAT!r})")
    return payload


def decode_batches(payload: dict, batch: int, layer: int = 0) -> List[torch.Tensor]:
    """[batch, E] router logits of every simulated decode batch of one layer (position-major)."""
    n, length = payload["sequence_shape"]
    logits = payload["router_logits"][layer].view(n, length, -1)
    return [logits[s:s + batch, t] for s in range(0, n - batch + 1, batch) for t in range(length)]
