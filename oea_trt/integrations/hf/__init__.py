"""OEA on Hugging Face transformers Qwen3-MoE models (transformers 4.51+ and 5.x), in place.

    import oea_trt.integrations.hf as oea_hf
    handle = oea_hf.apply_oea(model, 3)                 # k0 = 3 on every MoE layer
    logits = model(input_ids, attention_mask=mask).logits
    print(handle.stats())                               # distinct experts per batch, per layer
    handle.remove()                                     # the model routes vanilla top-k again

    with oea_hf.oea_routing(model, {0: 8, 1: 4, 2: 3}, mode="generate") as h:  # per-layer k0
        out = model.generate(input_ids, attention_mask=mask, max_new_tokens=32)

apply_oea(model, config=None, *, mode="decode-sim", routing="oea", decode_batch=None,
          count_batches=(), record_router_logits=False) -> OEAHandle
    config: OEAConfig (all MoE layers), int k0, None (vanilla), a list with one entry per MoE
        layer, or {decoder_layer_index: OEAConfig | k0 | None}. OEAConfig.num_experts, top_k
        and renormalize must match the model (E, num_experts_per_tok, norm_topk_prob).
    mode: "generate": each forward call is one serving batch: a call with L > 1 tokens per
        sequence is a prefill (context tokens, vanilla top-k, joining the loaded set), a call
        with L == 1 is a decode step; use it with model.generate(). "decode-sim": one forward
        over [B, L] emulates L decode steps of batch B (the paper's evaluation): position t's
        tokens form one batch of decode tokens; `decode_batch` cuts the forward batch into
        decode batches of that many sequences.
    routing: "oea" (the paper's rule) or "prune" (top-k0 without piggybacking).
    Padding (attention_mask == 0, the model's 2-D mask) is never routed into the loaded set.
OEAHandle: .remove(), context manager, .stats(), .reset_stats(), .configs,
    .router_logits(layer_index) (with record_router_logits=True).
oea_routing(model, config, **kw): context manager around apply_oea.
moe_layers(model): the model's Qwen3-MoE blocks (index, E, k, norm_topk_prob, style).

How it hooks (no copy of the model, nothing else changes): in transformers 5.x a forward hook
on each block's router replaces its (weights, indices) output, so every experts
implementation runs as is; in 4.x the block's forward is replaced on the instance by the same
computation with OEA's routing. Unused slots hold "top1" fill (a selected expert, weight 0),
which every transformers experts path accepts. Routing goes through oea_trt.routing.reference (CPU) or
the CUDA kernel's oea_trt.routing.dispatch.route when present (CUDA tensors). With k0 = top_k the
patched model's logits equal the unpatched model's.
"""
from oea_trt.integrations.hf.batches import MODES, token_kinds
from oea_trt.integrations.hf.layers import MoELayer, moe_layers
from oea_trt.integrations.hf.patch import ROUTINGS, OEAHandle, apply_oea, oea_routing

__all__ = ["MODES", "ROUTINGS", "MoELayer", "OEAHandle", "apply_oea", "moe_layers", "oea_routing", "token_kinds"]
