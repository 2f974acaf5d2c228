"""The TensorRT-LLM integration's one door to the OEA TensorRT plugin.

oea_trt.plugin_lib owns the plugin's identity (creator name, version, namespace), where its
shared library lives, how to load it, and how an OEAConfig becomes plugin fields; this module
only adapts that to what the TensorRT-LLM layer needs, so the layer never spells a field name.
Importing it needs no TensorRT.
"""
from __future__ import annotations

import importlib
from typing import Optional

from ..config import OEAConfig

#: Values of the plugin's token-split mode for the two RoutingPlan.batch_split choices.
#: all_decode: one input (router logits), every row is a decode token.
#: host_request_types: two more inputs, TensorRT-LLM's host_request_types [num_seq] and
#: host_context_lengths [num_seq] (int32, CPU memory at run time); context rows first.
SPLIT_INPUTS = {"all_decode": 1, "host_request_types": 3}


def _plugin_lib():
    try:
        return importlib.import_module("oea_trt.plugin_lib")
    except ImportError as exc:  # the plugin package is a sibling deliverable
        raise RuntimeError(
            f"oea_trt.plugin_lib is unavailable ({exc}); the OEA TensorRT plugin must be built and "
            "importable to build or run OEA engines"
        ) from None


def plugin_info() -> dict:
    """What oea_config.json records about the plugin (no library is loaded)."""
    try:
        lib = _plugin_lib()
    except RuntimeError as exc:
        return {"available": False, "reason": str(exc)}
    info = {
        "name": getattr(lib, "PLUGIN_NAME", None),
        "version": getattr(lib, "PLUGIN_VERSION", None),
        "namespace": getattr(lib, "PLUGIN_NAMESPACE", None),
    }
    for attr, key in (("library_path", "library"), ("library_version", "library_version")):
        fn = getattr(lib, attr, None)
        try:
            info[key] = fn() if callable(fn) else fn
        except Exception as exc:  # noqa: BLE001 - a missing .so is reported, not fatal, here
            info[key] = None
            info.setdefault("errors", []).append(f"{attr}: {exc}")
    return info


def load_plugin_library(path: Optional[str] = None):
    """Register the OEA plugin creator in this process (idempotent; see oea_trt.plugin_lib)."""
    lib = _plugin_lib()
    return lib.load(path) if path is not None else lib.load()


def get_creator(trt):
    """The plugin creator from TensorRT's registry (after load_plugin_library)."""
    lib = _plugin_lib()
    creator = trt.get_plugin_registry().get_creator(lib.PLUGIN_NAME, lib.PLUGIN_VERSION, lib.PLUGIN_NAMESPACE)
    if creator is None:
        raise RuntimeError(
            f"TensorRT has no plugin creator {lib.PLUGIN_NAME!r} version {lib.PLUGIN_VERSION!r} namespace "
            f"{lib.PLUGIN_NAMESPACE!r}: load the OEA plugin library first (oea_trt.trtllm.plugin_binding."
            "load_plugin_library, or LD_PRELOAD it)"
        )
    return creator


def field_collection(trt, config: OEAConfig, batch_split: str):
    """PluginFieldCollection for one OEA routing layer, packed by plugin_lib from the config."""
    if batch_split not in SPLIT_INPUTS:
        raise ValueError(f"batch_split must be one of {', '.join(SPLIT_INPUTS)}, got {batch_split!r}")
    lib = _plugin_lib()
    return lib.plugin_field_collection(trt, config, token_split=batch_split)
