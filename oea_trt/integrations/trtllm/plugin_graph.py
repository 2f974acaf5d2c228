"""Add one OEA routing plugin layer to the TensorRT-LLM network being built.

Needs tensorrt and tensorrt_llm (imported here, so import this module lazily). Follows the
pattern TensorRT-LLM 1.2.1 itself uses for IPluginV3 plugins (tensorrt_llm/models/eagle/model.py):
registry.get_creator -> create_plugin(name, fields, TensorRTPhase.BUILD) ->
default_trtnet().add_plugin_v3(inputs, [], plugin) -> _create_tensor(output, layer).
"""
from __future__ import annotations

from typing import Optional, Tuple

import tensorrt as trt
from tensorrt_llm._common import default_trtnet
from tensorrt_llm.functional import Tensor, _create_tensor

from oea_trt.routing.config import OEAConfig
from oea_trt import plugin


def oea_routing(router_logits: Tensor, config: OEAConfig, batch_split: str,
                host_request_types: Optional[Tensor] = None, host_context_lengths: Optional[Tensor] = None,
                name: str = "oea_routing") -> Tuple[Tensor, Tensor]:
    """router_logits [T, E] -> (expert ids int32 [T, k_max], weights fp32 [T, k_max]).

    With batch_split="host_request_types" the two host tensors go straight into the plugin (no
    TensorRT layer in between: they live in CPU memory at run time and the plugin reads them on
    the host in enqueue to find where context rows end)."""
    inputs = [router_logits]
    if batch_split == "host_request_types":
        if host_request_types is None or host_context_lengths is None:
            raise RuntimeError(
                f"{name}: the decode/context split needs TensorRT-LLM's host_request_types and "
                "host_context_lengths inputs, which exist only with the GPT attention plugin and "
                "remove_input_padding; build with both (oea-trt build does) or with batch split all_decode"
            )
        inputs += [host_request_types, host_context_lengths]
    creator = plugin.require_creator(trt)
    fields = plugin.field_collection(trt, config, plugin.token_kind_mode(batch_split))
    layer_plugin = creator.create_plugin(name, fields, trt.TensorRTPhase.BUILD)
    if layer_plugin is None:
        raise RuntimeError(f"{name}: the OEA plugin creator rejected the fields of {config}")
    layer = default_trtnet().add_plugin_v3([t.trt_tensor for t in inputs], [], layer_plugin)
    layer.name = name
    expert_ids = _create_tensor(layer.get_output(0), layer)
    weights = _create_tensor(layer.get_output(1), layer)
    return expert_ids, weights
