"""Test support for the OeaRouting plugin: build it, and drive it without TensorRT.

- ``plugin_build`` (session fixture): the directory holding liboea_routing_trt.so,
  liboea_routing_trt_preload.so and liboea_plugin_harness.so. Uses $OEA_TRT_PLUGIN_LIB's
  directory when set (a build with -DOEA_BUILD_HARNESS=ON); else builds with cmake, harness
  on (incremental, cached in build/trt-plugin or $OEA_TRT_PLUGIN_BUILD_DIR) when TensorRT
  headers are given by $TensorRT_INCLUDE_DIR (or $TensorRT_ROOT/include); else SKIPS: the
  headers cannot be committed, so CI has none.
- ``PluginHarness``: ctypes over plugin/tensorrt/harness/oea_plugin_harness.cpp, which
  dlopens the plugin library, takes the creator from getCreators and calls the plugin's
  build/runtime methods the way TensorRT does (enqueue on caller-owned device memory).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest

from oea_trt import plugin as plugin_lib

# nvinfer1::DataType / TensorFormat / PluginFieldType values (same in TensorRT 10.x and 11.x).
DT_FLOAT, DT_HALF, DT_INT32, DT_BF16, DT_INT64 = 0, 1, 3, 7, 8
FORMAT_LINEAR, FORMAT_CHW2 = 0, 1
FIELD_TYPE = {"float32": 1, "int32": 5}
LOGITS_DTYPE = {"float32": DT_FLOAT, "float16": DT_HALF, "bfloat16": DT_BF16}


def tensorrt_include_dir() -> Optional[Path]:
    for candidate in (os.environ.get("TensorRT_INCLUDE_DIR"),
                      os.environ.get("TensorRT_ROOT") and os.path.join(os.environ["TensorRT_ROOT"], "include")):
        if candidate and (Path(candidate) / "NvInferRuntime.h").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def plugin_build() -> Path:
    if os.environ.get(plugin_lib.LIBRARY_ENV):
        path = Path(os.environ[plugin_lib.LIBRARY_ENV])
        if not path.is_file():
            pytest.fail(f"{plugin_lib.LIBRARY_ENV}={path} is not a file")
        return path.parent
    include_dir = tensorrt_include_dir()
    if include_dir is None:
        pytest.skip("no TensorRT headers: set TensorRT_INCLUDE_DIR=<TensorRT>/include to build and test the "
                    "plugin (or OEA_TRT_PLUGIN_LIB=<built liboea_routing_trt.so>)")
    build_dir = os.environ.get("OEA_TRT_PLUGIN_BUILD_DIR") or plugin_lib.DEFAULT_BUILD_DIR
    return plugin_lib.build_library(include_dir, build_dir, os.environ.get("OEA_TRT_CUDA_ARCHS"), harness=True)


class Plugin:
    """One IPluginV3 instance created through the harness."""

    def __init__(self, harness: "PluginHarness", handle: int, nb_inputs: int, k_max: int, experts: int):
        self.harness, self.handle = harness, handle
        self.nb_inputs, self.k_max, self.experts = nb_inputs, k_max, experts

    def __del__(self):
        if getattr(self, "handle", None):
            self.harness.lib.oea_h_destroy(self.handle)
            self.handle = None

    def _like(self, handle) -> Optional["Plugin"]:
        return Plugin(self.harness, handle, self.nb_inputs, self.k_max, self.experts) if handle else None

    def reload(self) -> Optional["Plugin"]:
        """getFieldsToSerialize -> createPlugin(kRUNTIME): what loading an engine does."""
        return self._like(self.harness.lib.oea_h_reload(self.handle))

    def clone(self) -> Optional["Plugin"]:
        return self._like(self.harness.lib.oea_h_clone(self.handle))

    def info(self) -> str:
        return self.harness.lib.oea_h_plugin_info(self.handle).decode()

    def serialized(self) -> Dict[str, np.ndarray]:
        buffer = ctypes.create_string_buffer(1 << 16)
        self.harness.lib.oea_h_serialized(self.handle, buffer, len(buffer))
        fields = {}
        for line in buffer.value.decode().splitlines():
            name, kind, length, *values = line.split()
            dtype = np.float32 if int(kind) == FIELD_TYPE["float32"] else np.int32
            assert len(values) == int(length), line
            fields[name] = np.array([float(v) if dtype is np.float32 else int(v) for v in values], dtype=dtype)
        return fields

    def nb_outputs(self) -> int:
        return self.harness.lib.oea_h_nb_outputs(self.handle)

    def output_types(self, input_types):
        types = (ctypes.c_int32 * 3)(*input_types)
        out = (ctypes.c_int32 * 2)()
        status = self.harness.lib.oea_h_output_types(self.handle, len(input_types), types, out)
        return status, list(out)

    def supports(self, pos: int, types, formats=None) -> bool:
        formats = formats or [FORMAT_LINEAR] * len(types)
        t = (ctypes.c_int32 * 5)(*types)
        f = (ctypes.c_int32 * 5)(*formats)
        return bool(self.harness.lib.oea_h_supports(self.handle, pos, len(types) - 2, t, f))

    def output_shapes(self, ranks, experts: int):
        """(status, [[nbDims, d0, d1], ...]); d = constant, -2 = router_logits' T, -1 = other symbol."""
        r = (ctypes.c_int32 * 3)(*ranks)
        out = (ctypes.c_int64 * 6)()
        status = self.harness.lib.oea_h_output_shapes(self.handle, len(ranks), r, experts, out)
        return status, [list(out[0:3]), list(out[3:6])]

    def workspace(self, logits_type: int, max_tokens: int, num_seq: int = 1) -> int:
        return self.harness.lib.oea_h_workspace(
            self.handle, self.nb_inputs, logits_type, max_tokens, self.experts, num_seq, self.k_max)

    def enqueue(self, logits, expert_ids, weights, workspace, stream: int, input1=None, input2=None,
                num_seq: int = 0) -> int:
        """onShapeChange + enqueue. logits/outputs/workspace: torch CUDA tensors; input1/2:
        torch tensors (device token_kind, or CPU host_request_types / host_context_lengths)."""
        ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)  # noqa: E731
        return self.harness.lib.oea_h_enqueue(
            self.handle, self.nb_inputs, LOGITS_DTYPE[str(logits.dtype).replace("torch.", "")],
            logits.shape[0], logits.shape[1], num_seq, self.k_max, ptr(logits), ptr(input1), ptr(input2),
            ptr(expert_ids), ptr(weights), ptr(workspace), ctypes.c_void_p(stream))


class PluginHarness:
    """liboea_plugin_harness.so with liboea_routing_trt.so opened through getCreators."""

    def __init__(self, lib_dir: Path):
        lib = ctypes.CDLL(str(Path(lib_dir) / "liboea_plugin_harness.so"))
        vp, i32, i64, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_char_p
        signatures = {
            "oea_h_last_error": (cp, []),
            "oea_h_open": (i32, [cp]),
            "oea_h_creator_info": (cp, []),
            "oea_h_create": (vp, [i32, ctypes.POINTER(cp), ctypes.POINTER(i32), ctypes.POINTER(vp),
                                  ctypes.POINTER(i32), i32]),
            "oea_h_destroy": (None, [vp]),
            "oea_h_reload": (vp, [vp]),
            "oea_h_clone": (vp, [vp]),
            "oea_h_serialized": (i32, [vp, ctypes.c_char_p, i32]),
            "oea_h_plugin_info": (cp, [vp]),
            "oea_h_nb_outputs": (i32, [vp]),
            "oea_h_output_types": (i32, [vp, i32, ctypes.POINTER(i32), ctypes.POINTER(i32)]),
            "oea_h_supports": (i32, [vp, i32, i32, ctypes.POINTER(i32), ctypes.POINTER(i32)]),
            "oea_h_output_shapes": (i32, [vp, i32, ctypes.POINTER(i32), i64, ctypes.POINTER(i64)]),
            "oea_h_workspace": (i64, [vp, i32, i32, i64, i64, i64, i64]),
            "oea_h_enqueue": (i32, [vp, i32, i32, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp, vp]),
        }
        for name, (restype, argtypes) in signatures.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.lib = lib
        self.library_path = Path(lib_dir) / plugin_lib.LIBRARY_NAME
        if lib.oea_h_open(str(self.library_path).encode()) < 0:
            raise RuntimeError(f"harness could not open {self.library_path}: {lib.oea_h_last_error().decode()}")

    def creator_info(self) -> str:
        return self.lib.oea_h_creator_info().decode()

    def create_raw(self, fields: Dict[str, np.ndarray], phase: int = 0) -> Optional[int]:
        """createPlugin from raw fields (any dtype: ints -> kINT32, floats -> kFLOAT32 unless
        the array's dtype says otherwise via FIELD_TYPE); returns the handle or None."""
        names = (ctypes.c_char_p * len(fields))(*[n.encode() for n in fields])
        arrays = [np.ascontiguousarray(a) for a in fields.values()]
        types = (ctypes.c_int32 * len(fields))(*[FIELD_TYPE.get(a.dtype.name, 0) for a in arrays])
        data = (ctypes.c_void_p * len(fields))(*[a.ctypes.data for a in arrays])
        lengths = (ctypes.c_int32 * len(fields))(*[a.size for a in arrays])
        return self.lib.oea_h_create(len(fields), names, types, data, lengths, phase) or None

    def create(self, config, token_kind_mode: int = 0, phase: int = 0) -> Optional[Plugin]:
        handle = self.create_raw(plugin_lib.plugin_fields(config, token_kind_mode), phase)
        if handle is None:
            return None
        return Plugin(self, handle, plugin_lib.num_inputs(token_kind_mode), config.k_max, config.num_experts)


def leading_context_rows(lib_dir: Path, request_types, context_lengths, num_tokens: int) -> int:
    """The plugin library's own host-side split of a TensorRT-LLM packed batch (CPU only)."""
    lib = ctypes.CDLL(str(Path(lib_dir) / plugin_lib.LIBRARY_NAME))
    fn = lib.oea_trt_leading_context_rows
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    types = np.ascontiguousarray(request_types, dtype=np.int32)
    lengths = np.ascontiguousarray(context_lengths, dtype=np.int32)
    return fn(types.ctypes.data, lengths.ctypes.data, types.size, num_tokens)
