"""The TensorRT-LLM integration's one door to the OEA TensorRT plugin.

oea_trt.plugin_lib owns the plugin's identity (OeaRouting / version / namespace), its field
table and packing (plugin_fields / field_collection), its token-kind modes, the load-time k0
override variables and where its libraries are; this module only adapts that to what the
TensorRT-LLM layer and the builder need, so nothing here spells a field name. Importing it
needs no TensorRT.
"""
from __future__ import annotations

from typing import Optional

from .. import plugin_lib
from ..config import OEAConfig

#: RoutingPlan.batch_split -> the plugin's token_kind_mode.
#: host_request_types: + TensorRT-LLM's host_request_types [num_seq] and host_context_lengths
#:   [num_seq] (int32, CPU memory at run time; context requests first in a packed batch).
#: all_decode: router logits only; every row is a decode token.
TOKEN_KIND_MODE = {
    "host_request_types": plugin_lib.TOKEN_KIND_TRTLLM,
    "all_decode": plugin_lib.TOKEN_KIND_NONE,
}


def token_kind_mode(batch_split: str) -> int:
    try:
        return TOKEN_KIND_MODE[batch_split]
    except KeyError:
        raise ValueError(f"batch_split must be one of {', '.join(TOKEN_KIND_MODE)}, got {batch_split!r}") from None


def plugin_info() -> dict:
    """What oea_config.json records about the plugin (nothing is loaded)."""
    library = plugin_lib.find_library()
    preload = plugin_lib.find_library(preload=True)
    return {
        "name": plugin_lib.PLUGIN_NAME,
        "version": plugin_lib.PLUGIN_VERSION,
        "namespace": plugin_lib.PLUGIN_NAMESPACE,
        "library": str(library) if library else None,            # IPluginRegistry.load_library
        "preload_library": str(preload) if preload else None,    # LD_PRELOAD (Triton, workers)
        "k0_override_env": [plugin_lib.K0_ENV, plugin_lib.K0_SCHEDULE_ENV],
    }


def load_plugin_library(path: Optional[str] = None):
    """Register OeaRouting with TensorRT's registry in this process (idempotent)."""
    import tensorrt as trt

    return plugin_lib.load_library(trt, path)


def get_creator(trt):
    creator = plugin_lib.get_creator(trt)
    if creator is None:
        raise RuntimeError(
            f"TensorRT has no plugin creator {plugin_lib.PLUGIN_NAME!r} v{plugin_lib.PLUGIN_VERSION} in namespace "
            f"{plugin_lib.PLUGIN_NAMESPACE!r}: load the OEA plugin library first "
            "(oea_trt.runtime.load_plugin(), or LD_PRELOAD the preload variant)"
        )
    return creator


def field_collection(trt, config: OEAConfig, batch_split: str):
    """PluginFieldCollection for one OEA routing layer (packed by plugin_lib)."""
    return plugin_lib.field_collection(trt, config, token_kind_mode(batch_split))


def num_inputs(batch_split: str) -> int:
    return plugin_lib.num_inputs(token_kind_mode(batch_split))
