"""Qwen3-MoE for TensorRT-LLM 1.2.1's TensorRT backend with OEA routing in every MoE layer.

OEAQwenForCausalLM is TensorRT-LLM's QWenForCausalLM (tensorrt_llm/models/qwen/model.py) with
its decoder layers replaced by OEAQwenDecoderLayer, which (1) turns the layer's MoE into
OEAMixtureOfExperts with that layer's OEA config (per-layer k0 from the routing plan stored
under "oea" in the checkpoint config) and (2) hands the MoE the batch description
(host_request_types / host_context_lengths from attention_params), which the stock decoder
layer passes only to attention. Importing this module loads the OEA plugin library.

Build with `oea-trt build` (which runs trtllm-build --model_cls_file
oea_trt/integrations/trtllm/model_cls_file.py --model_cls_name OEAQwenForCausalLM).
"""
from __future__ import annotations

from tensorrt_llm.layers.moe import MixtureOfExperts
from tensorrt_llm.models.modeling_utils import DecoderLayerList
from tensorrt_llm.models.qwen.model import QWenDecoderLayer, QWenForCausalLM

from oea_trt.integrations.trtllm.layer import enable_oea
from oea_trt.plugin import load_plugin
from oea_trt.plan.routing_plan import CONFIG_KEY, RoutingPlan

# The engine being built references the plugin creator: it must be registered in this process
# (and, under trtllm-build --workers N, in every worker that imports this module).
load_plugin()


def routing_plan_of(config) -> RoutingPlan:
    raw = getattr(config, CONFIG_KEY, None)
    if raw is None:
        raise RuntimeError(
            "the TensorRT-LLM checkpoint config has no 'oea' routing plan: convert it with "
            "`oea-trt build` (or add the plan with oea_trt.integrations.trtllm.build.patch_checkpoint_config)"
        )
    return raw if isinstance(raw, RoutingPlan) else RoutingPlan.from_dict(raw)


class OEAQwenDecoderLayer(QWenDecoderLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        plan = routing_plan_of(config)
        # TensorRT-LLM picks the MLP class from config.moe alone (QWenConfig keeps
        # mlp_only_layers / decoder_sparse_step but QWenDecoderLayer does not read them), so
        # the layer as built and the plan are checked against each other.
        layer_config = plan.config_for_built_layer(layer_idx, isinstance(self.mlp, MixtureOfExperts))
        self.oea = layer_config is not None
        if self.oea:
            enable_oea(self.mlp, layer_config, plan.batch_split, layer_idx)

    def forward(self, hidden_states, *args, attention_params=None, **kwargs):
        if not self.oea:
            return super().forward(hidden_states, *args, attention_params=attention_params, **kwargs)
        with self.mlp.batch_description(attention_params):
            return super().forward(hidden_states, *args, attention_params=attention_params, **kwargs)


class OEAQwenForCausalLM(QWenForCausalLM):
    def __init__(self, config):
        super().__init__(config)
        # QWenModel builds QWenDecoderLayer; rebuild the list with the OEA layer (same
        # parameter names, so checkpoints load unchanged).
        self.transformer.layers = DecoderLayerList(OEAQwenDecoderLayer, config)
