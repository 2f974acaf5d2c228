"""OEA routing inside TensorRT-LLM 1.2.1's MixtureOfExperts (tensorrt_llm/layers/moe.py).

The stock forward is: fp32 router RowLinear -> logits [T, E] -> top-k routing built from TRT
layers -> forward_experts(hidden, ids, scales, lora, side_stream) (the MixtureOfExperts plugin)
-> optional TP all-reduce. OEAMixtureOfExperts replaces only the routing step with the OEA
plugin; the expert GEMMs, TP/EP sharding, weights and all-reduce stay TensorRT-LLM's.

Decoder layers are built by TensorRT-LLM's own constructors; enable_oea() turns the MoE they
built into the OEA variant in place (the class changes, the parameters and their names do
not), so checkpoints, quantization wrappers and weight loading are untouched.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import tensorrt as trt
from tensorrt_llm.functional import SideStreamIDType, cast
from tensorrt_llm.layers.moe import MixtureOfExperts, SharedMoE

from oea_trt.routing.config import OEAConfig
from oea_trt.integrations.trtllm.plugin_graph import oea_routing


class OEAMixtureOfExperts(MixtureOfExperts):
    """MixtureOfExperts whose routing is the OEA plugin (attributes set by enable_oea)."""

    oea_config: OEAConfig
    oea_batch_split: str
    oea_name: str

    @contextlib.contextmanager
    def batch_description(self, attention_params):
        """Hand this layer the step's host_request_types / host_context_lengths while the
        decoder layer builds its forward (TensorRT-LLM passes them only to attention)."""
        previous = getattr(self, "_oea_batch", None)
        self._oea_batch = (
            getattr(attention_params, "host_request_types", None),
            getattr(attention_params, "host_context_lengths", None),
        )
        try:
            yield
        finally:
            self._oea_batch = previous

    def forward(self, hidden_states, lora_layer_params=None, all_reduce_params=None,
                last_local_layer_residual=None, side_stream_id: Optional[SideStreamIDType] = SideStreamIDType.disable,
                static_routing_input=None):
        if self.static_routing:
            # Routing given from outside the model: nothing for OEA to choose.
            return super().forward(hidden_states, lora_layer_params, all_reduce_params,
                                   last_local_layer_residual, side_stream_id, static_routing_input)
        if getattr(self, "oea_config", None) is None:
            raise RuntimeError("OEAMixtureOfExperts used without enable_oea(): no OEA config on this layer")
        router_lora = None
        if lora_layer_params is not None:
            router_lora = lora_layer_params.get_runtime_params(0, "moe_router")
        # Same fp32 router as the stock layer: routing is sensitive to precision.
        router_logits = self.router(cast(hidden_states, trt.float32), router_lora)
        host_request_types, host_context_lengths = getattr(self, "_oea_batch", None) or (None, None)
        token_selected_experts, token_final_scales = oea_routing(
            router_logits, self.oea_config, self.oea_batch_split, host_request_types, host_context_lengths,
            name=self.oea_name,
        )
        output = self.forward_experts(hidden_states, token_selected_experts, token_final_scales,
                                      lora_layer_params, side_stream_id)
        if side_stream_id != SideStreamIDType.disable:
            output, side_stream_sync_tensor = output
        if self.use_all_reduce:
            output = self.forward_allreduce(output, all_reduce_params, last_local_layer_residual)
        if side_stream_id != SideStreamIDType.disable:
            # As in the stock layer: tensors the side stream reads must outlive it.
            keep = (side_stream_sync_tensor, hidden_states, token_selected_experts, token_final_scales,
                    lora_layer_params)
            output = (output, tuple(t for t in keep if t is not None))
        return output


class OEASharedMoE(SharedMoE, OEAMixtureOfExperts):
    """SharedMoE (routed experts + shared expert) with OEA routing: SharedMoE.forward's
    super().forward resolves to OEAMixtureOfExperts.forward through this MRO."""


def enable_oea(moe: MixtureOfExperts, config: OEAConfig, batch_split: str, layer_idx: int) -> MixtureOfExperts:
    """Turn a MixtureOfExperts built by TensorRT-LLM into its OEA variant, in place."""
    if not isinstance(moe, MixtureOfExperts):
        raise TypeError(f"layer {layer_idx}: expected a MixtureOfExperts MLP, got {type(moe).__name__}")
    if config.num_experts != moe.num_experts or config.top_k != moe.top_k:
        raise ValueError(
            f"layer {layer_idx}: OEA config has E={config.num_experts}, top_k={config.top_k} but the "
            f"layer has E={moe.num_experts}, top_k={moe.top_k}"
        )
    if config.k_max != moe.top_k:
        raise ValueError(f"layer {layer_idx}: k_max must equal the MoE plugin's top_k={moe.top_k}, got {config.k_max}")
    if isinstance(moe, SharedMoE):
        moe.__class__ = OEASharedMoE
    elif type(moe) is MixtureOfExperts:
        moe.__class__ = OEAMixtureOfExperts
    elif not isinstance(moe, OEAMixtureOfExperts):
        raise TypeError(f"layer {layer_idx}: {type(moe).__name__} is not a MoE class OEA knows how to route")
    moe.oea_config = config
    moe.oea_batch_split = batch_split
    moe.oea_name = f"oea_routing_L{layer_idx}"
    return moe
