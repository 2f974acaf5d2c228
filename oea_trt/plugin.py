"""The OeaRouting TensorRT plugin from Python: its identity, its fields, and its library.

The plugin itself is C++ (plugin/tensorrt/, docs/plugin.md). This module is what Python
callers (the TensorRT-LLM layer, tests, tools) need to use it:

- identity: PLUGIN_NAME / PLUGIN_VERSION / PLUGIN_NAMESPACE, as registered with TensorRT;
- fields: ``plugin_fields(config, token_kind_mode)`` turns an OEAConfig into the plugin's
  fields (numpy arrays, no TensorRT needed), ``field_collection(trt, ...)`` wraps them for a
  TensorRT module (``collection_from_arrays`` for raw fields), ``config_from_fields`` is the
  inverse;
- inputs: TOKEN_KIND_NONE / TOKEN_KIND_DEVICE / TOKEN_KIND_TRTLLM and ``num_inputs(mode)``;
- k0 at load time: ``set_k0_override(k0, k0_schedule)`` in a process that deserializes the
  engine itself; K0_ENV / K0_SCHEDULE_ENV and ``k0_override_env(...)`` for processes that run
  none of our Python;
- the library: ``find_library()``, ``load_library(trt)`` (into TensorRT's plugin registry),
  ``get_creator(trt)`` / ``require_creator(trt)``, and ``build_library(include_dir)`` (cmake);
- processes: ``load_plugin()`` registers OeaRouting with the full TensorRT in this process,
  ``worker_env()`` is the environment (LD_PRELOAD) for processes that run none of our Python;
- TensorRT-LLM's view: ``token_kind_mode(batch_split)`` and ``plugin_info()`` (oea_config.json).

This is the one door to the plugin: every other module (the TensorRT-LLM layer, the builder,
the runtimes, the Triton writer, tests) goes through the names here.

``trt`` is whichever TensorRT Python module the caller uses: ``tensorrt`` (full),
``tensorrt_lean_bindings`` (lean runtime); this module never imports one itself.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from oea_trt.routing.config import FILL_MODES, ConfigError, OEAConfig, format_k0_schedule
from oea_trt.routing.params import kernel_params

#: The plugin's identity in TensorRT's registry and in every engine that uses it.
PLUGIN_NAME = "OeaRouting"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "oea_trt"

#: token_kind_mode values: how the plugin learns which rows are decode tokens.
TOKEN_KIND_NONE = 0  #: one input, router_logits; every row is a decode token
TOKEN_KIND_DEVICE = 1  #: + token_kind int32 [T] on the device (0 decode, 1 context, else padding)
TOKEN_KIND_TRTLLM = 2  #: + host_request_types, host_context_lengths int32 [num_seq] in CPU memory
TOKEN_KIND_MODES = {"none": TOKEN_KIND_NONE, "device": TOKEN_KIND_DEVICE, "trtllm": TOKEN_KIND_TRTLLM}

#: Environment variables read when an engine is loaded (createPlugin at the runtime phase);
#: they override k0 / the k0 schedule stored in the engine for every OeaRouting layer of a
#: process that runs none of our Python (set_k0_override wins over them).
K0_ENV = "OEA_TRT_K0"
K0_SCHEDULE_ENV = "OEA_TRT_K0_SCHEDULE"

#: Path of liboea_routing_trt.so to use instead of searching the build directories.
LIBRARY_ENV = "OEA_TRT_PLUGIN_LIB"
LIBRARY_NAME = "liboea_routing_trt.so"  #: getCreators export: loadLibrary, trtexec, lean runtime
PRELOAD_LIBRARY_NAME = "liboea_routing_trt_preload.so"  #: registers itself: LD_PRELOAD only

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "trt-plugin"


class PluginLibraryError(RuntimeError):
    """The plugin library is missing, does not load, or does not register OeaRouting."""


class FieldSpec(NamedTuple):
    """One plugin field. count None = variable (k0_schedule: 2 values per pair)."""

    name: str
    dtype: str  # "int32" or "float32" (PluginFieldType INT32 / FLOAT32)
    count: Optional[int]
    required: bool


#: Mirror of OEA_PLUGIN_FIELDS in plugin/tensorrt/oea_plugin_fields.h (the C++ table is the
#: definition; tests/test_plugin_fields.py fails when the two differ).
PLUGIN_FIELDS: Tuple[FieldSpec, ...] = (
    FieldSpec("num_experts", "int32", 1, True),
    FieldSpec("top_k", "int32", 1, True),
    FieldSpec("k0", "int32", 1, True),
    FieldSpec("k_max", "int32", 1, False),
    FieldSpec("max_rank", "int32", 1, False),
    FieldSpec("top_p", "float32", 1, False),
    FieldSpec("renormalize", "int32", 1, False),
    FieldSpec("fill", "int32", 1, False),
    FieldSpec("piggyback_on_context", "int32", 1, False),
    FieldSpec("k0_schedule", "int32", None, False),
    FieldSpec("token_kind_mode", "int32", 1, False),
)


def num_inputs(token_kind_mode: int) -> int:
    """Inputs the plugin takes in this mode (router_logits first)."""
    if token_kind_mode not in (TOKEN_KIND_NONE, TOKEN_KIND_DEVICE, TOKEN_KIND_TRTLLM):
        raise ValueError(
            f"token_kind_mode must be 0 (none), 1 (device token_kind) or 2 (TensorRT-LLM host inputs), "
            f"got {token_kind_mode!r}"
        )
    return 1 + token_kind_mode


def plugin_fields(config: OEAConfig, token_kind_mode: int = TOKEN_KIND_NONE) -> Dict[str, np.ndarray]:
    """The plugin fields for `config`, in table order: name -> int32/float32 numpy array.

    Read off the kernel's parameter record (oea_trt.routing.params.kernel_params), the same one
    the Python binding launches with. Every field is written (k_max and max_rank resolved),
    except k0_schedule when there is none: an absent schedule and an empty one mean the same
    to the plugin.
    """
    num_inputs(token_kind_mode)  # validates the mode
    params = kernel_params(config)
    values = {
        "num_experts": params.num_experts,
        "top_k": params.top_k,
        "k0": params.k0,
        "k_max": params.k_max,
        "max_rank": params.max_rank,
        "top_p": params.top_p,
        "renormalize": params.renormalize,
        "fill": params.fill,
        "piggyback_on_context": params.piggyback_on_context,
        "k0_schedule": params.k0_schedule_flat,
        "token_kind_mode": token_kind_mode,
    }
    fields = {}
    for spec in PLUGIN_FIELDS:
        value = values[spec.name]
        if spec.count is None and not value:
            continue
        fields[spec.name] = np.atleast_1d(np.asarray(value, dtype=spec.dtype))
    return fields


def config_from_fields(fields: Mapping[str, Sequence]) -> Tuple[OEAConfig, int]:
    """Inverse of plugin_fields: (OEAConfig, token_kind_mode). Raises ConfigError / KeyError."""
    known = {spec.name for spec in PLUGIN_FIELDS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise KeyError(f"unknown OeaRouting field(s) {unknown}; known: {sorted(known)}")

    def scalar(name, default=None):
        if name not in fields:
            return default
        return np.asarray(fields[name]).reshape(-1)[0].item()

    def flag(name):  # the plugin stores booleans as int32 0/1 and refuses anything else
        value = int(scalar(name, 1))
        if value not in (0, 1):
            raise ConfigError(f"{name} must be 0 or 1 (false/true), got {value}")
        return bool(value)

    fill_code = int(scalar("fill", 0))
    if not 0 <= fill_code < len(FILL_MODES):
        raise ConfigError(f"fill must be a code in [0, {len(FILL_MODES) - 1}] ({', '.join(FILL_MODES)}), got {fill_code}")
    flat = [int(v) for v in np.asarray(fields.get("k0_schedule", []), dtype=np.int64).reshape(-1)]
    if len(flat) % 2:
        raise ConfigError(f"k0_schedule must hold (min_decode_tokens, k0) pairs, got {len(flat)} values")
    config = OEAConfig(
        num_experts=int(scalar("num_experts")),
        top_k=int(scalar("top_k")),
        k0=int(scalar("k0")),
        k_max=None if "k_max" not in fields else int(scalar("k_max")),
        max_rank=None if "max_rank" not in fields else int(scalar("max_rank")),
        top_p=float(scalar("top_p", 1.0)),
        renormalize=flag("renormalize"),
        fill=FILL_MODES[fill_code],
        piggyback_on_context=flag("piggyback_on_context"),
        k0_schedule=tuple(zip(flat[0::2], flat[1::2])) or None,
    )
    return config, int(scalar("token_kind_mode", TOKEN_KIND_NONE))


def field_collection(trt, config: OEAConfig, token_kind_mode: int = TOKEN_KIND_NONE):
    """A ``trt.PluginFieldCollection`` for `config` (``trt``: tensorrt or tensorrt_lean_bindings)."""
    return collection_from_arrays(trt, plugin_fields(config, token_kind_mode))


_COLLECTION_TYPES: Dict[object, type] = {}


def collection_from_arrays(trt, arrays: Mapping[str, np.ndarray]):
    """``trt.PluginFieldCollection`` of raw fields (name -> numpy array; the array's dtype
    gives the PluginFieldType). The collection keeps its fields alive: TensorRT's own
    collection copies only pointers, so a collection built inline would otherwise point at
    freed arrays by the time createPlugin reads them."""
    collection_type = _COLLECTION_TYPES.get(trt)
    if collection_type is None:

        class FieldCollection(trt.PluginFieldCollection):
            def __init__(self, fields):
                super().__init__(fields)
                self.keep_alive = fields

        collection_type = _COLLECTION_TYPES[trt] = FieldCollection
    fields = [
        trt.PluginField(name, np.ascontiguousarray(array), getattr(trt.PluginFieldType, array.dtype.name.upper()))
        for name, array in arrays.items()
    ]
    return collection_type(fields)


def k0_override_env(k0: Optional[int] = None, k0_schedule=None) -> Dict[str, str]:
    """Environment entries that override k0 / the schedule when an engine is loaded.

    k0_schedule: pairs ((min_decode_tokens, k0), ...), or () to remove the engine's schedule.
    The plugin validates them against each layer's k_max at load and fails the load if invalid.
    """
    env = {}
    if k0 is not None:
        env[K0_ENV] = str(int(k0))
    if k0_schedule is not None:
        env[K0_SCHEDULE_ENV] = format_k0_schedule(k0_schedule) or "none"
    return env


def set_k0_override(k0: Optional[int] = None, k0_schedule=None, path=None) -> None:
    """Override k0 / the schedule of every OeaRouting layer this process deserializes from now on.

    k0_schedule: pairs ((min_decode_tokens, k0), ...), () to remove the engine's schedule, or
    None to keep it; k0 None keeps the engine's k0; both None clears the override. Calls the
    plugin library's oeaSetK0Override, which wins over K0_ENV / K0_SCHEDULE_ENV. The library
    is the one TensorRT loads (``path``, else find_library()), or the LD_PRELOAD variant when
    that one is in the process. Each layer checks the values against its k_max when the engine
    loads (the load fails then); a value that does not parse raises ConfigError here.
    """
    import ctypes

    function = getattr(ctypes.CDLL(None), "oeaSetK0Override", None)  # a preloaded (global) plugin library
    if function is None:
        library = Path(path) if path is not None else find_library()
        if library is None or not library.is_file():
            raise PluginLibraryError(f"{LIBRARY_NAME} not found (looked at ${LIBRARY_ENV} and the build directories): "
                                     f"pass its path or build it with scripts/check_plugin.sh")
        function = ctypes.CDLL(str(library)).oeaSetK0Override
    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    function.restype = ctypes.c_int32
    k0_text = b"" if k0 is None else str(int(k0)).encode()
    schedule_text = b"" if k0_schedule is None else (format_k0_schedule(k0_schedule) or "none").encode()
    error = ctypes.create_string_buffer(512)
    if function(k0_text, schedule_text, error, len(error)) != 0:
        raise ConfigError(error.value.decode())


def find_library(preload: bool = False) -> Optional[Path]:
    """Path of the built plugin library, or None. $OEA_TRT_PLUGIN_LIB wins (for the getCreators
    library); then the repository's build directories (build/lib, build/trt-plugin/lib)."""
    name = PRELOAD_LIBRARY_NAME if preload else LIBRARY_NAME
    if not preload and os.environ.get(LIBRARY_ENV):
        path = Path(os.environ[LIBRARY_ENV])
        return path if path.is_file() else None
    for directory in (REPO_ROOT / "build" / "lib", DEFAULT_BUILD_DIR / "lib"):
        if (directory / name).is_file():
            return directory / name
    return None


def get_creator(trt):
    """The registered OeaRouting creator of ``trt``'s plugin registry, or None."""
    return trt.get_plugin_registry().get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)


def load_library(trt, path=None):
    """Register OeaRouting with ``trt``'s plugin registry; returns its creator.

    Loads liboea_routing_trt.so (``path``, else find_library()) with
    IPluginRegistry.load_library, unless the creator is already registered (an earlier call,
    or the LD_PRELOAD variant): the registry refuses the same creator twice.
    """
    creator = get_creator(trt)
    if creator is not None:
        return creator
    path = Path(path) if path is not None else find_library()
    if path is None or not path.is_file():
        raise PluginLibraryError(
            f"{LIBRARY_NAME} not found (looked at ${LIBRARY_ENV}, {REPO_ROOT / 'build' / 'lib'}, "
            f"{DEFAULT_BUILD_DIR / 'lib'}): build it with scripts/check_plugin.sh <TensorRT include dir> "
            f"or set {LIBRARY_ENV}=/path/to/{LIBRARY_NAME}"
        )
    handle = trt.get_plugin_registry().load_library(str(path))
    creator = get_creator(trt)
    if not handle or creator is None:
        raise PluginLibraryError(
            f"TensorRT could not load {path} or it registered no {PLUGIN_NAME} v{PLUGIN_VERSION} "
            f"in namespace {PLUGIN_NAMESPACE!r} (built against another TensorRT major version?)"
        )
    return creator


def build_library(
    tensorrt_include_dir, build_dir=None, cuda_architectures: Optional[str] = None, jobs: int = 2,
    harness: bool = False,
) -> Path:
    """Configure and build the plugin targets with cmake; returns the directory of the .so files.

    Needs the repository's sources (top-level CMakeLists.txt), cmake, nvcc and TensorRT headers.
    harness: also build liboea_plugin_harness.so (test machinery, OEA_BUILD_HARNESS).
    Incremental: a second call with the same build_dir only rebuilds what changed.
    """
    include_dir = Path(tensorrt_include_dir)
    if not (include_dir / "NvInferRuntime.h").is_file():
        raise PluginLibraryError(f"{include_dir} has no NvInferRuntime.h: pass TensorRT's include directory")
    if not (REPO_ROOT / "CMakeLists.txt").is_file():
        raise PluginLibraryError(f"no CMakeLists.txt at {REPO_ROOT}: building needs the oea-trt source tree")
    build = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    configure = [
        "cmake", "-S", str(REPO_ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        f"-DTensorRT_INCLUDE_DIR={include_dir}", f"-DOEA_BUILD_HARNESS={'ON' if harness else 'OFF'}",
    ]
    if cuda_architectures:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    targets = ["oea_routing_trt", "oea_routing_trt_preload"] + (["oea_plugin_harness"] if harness else [])
    for command in (configure, ["cmake", "--build", str(build), "-j", str(jobs), "--target", *targets]):
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-40:])
            raise PluginLibraryError(f"{' '.join(command)} failed (exit {done.returncode}):\n{tail}")
    return build / "lib"


# ---- the plugin as TensorRT-LLM and the runtimes see it --------------------------------------

#: RoutingPlan.batch_split -> token_kind_mode.
#: host_request_types: + TensorRT-LLM's host_request_types [num_seq] and host_context_lengths
#:   [num_seq] (int32, CPU memory at run time; context requests first in a packed batch).
#: all_decode: router logits only; every row is a decode token.
BATCH_SPLIT_MODES = {"host_request_types": TOKEN_KIND_TRTLLM, "all_decode": TOKEN_KIND_NONE}


def token_kind_mode(batch_split: str) -> int:
    try:
        return BATCH_SPLIT_MODES[batch_split]
    except KeyError:
        raise ValueError(f"batch_split must be one of {', '.join(BATCH_SPLIT_MODES)}, got {batch_split!r}") from None


def require_creator(trt):
    """The registered OeaRouting creator of ``trt``; raises with what to do when there is none."""
    creator = get_creator(trt)
    if creator is None:
        raise PluginLibraryError(
            f"TensorRT has no plugin creator {PLUGIN_NAME!r} v{PLUGIN_VERSION} in namespace {PLUGIN_NAMESPACE!r}: "
            "load the OEA plugin library first (oea_trt.plugin.load_plugin(), or LD_PRELOAD the preload variant)")
    return creator


def plugin_info() -> dict:
    """What oea_config.json records about the plugin (nothing is loaded)."""
    library = find_library()
    preload = find_library(preload=True)
    return {
        "name": PLUGIN_NAME,
        "version": PLUGIN_VERSION,
        "namespace": PLUGIN_NAMESPACE,
        "library": str(library) if library else None,            # IPluginRegistry.load_library
        "preload_library": str(preload) if preload else None,    # LD_PRELOAD (Triton, workers)
        "k0_override_env": [K0_ENV, K0_SCHEDULE_ENV],            # or set_k0_override in-process
    }


def load_plugin(path=None):
    """Register OeaRouting with the full TensorRT's plugin registry in this process (idempotent);
    returns the creator. TensorRT-LLM engines do not embed plugins: every process that
    deserializes one must do this (or LD_PRELOAD the preload library, see worker_env) first."""
    import tensorrt as trt

    return load_library(trt, path)


def worker_env(k0: Optional[int] = None, k0_schedule=None, preload: Optional[str] = None) -> Dict[str, str]:
    """Environment for processes that load an OEA engine without our Python (Triton's
    tensorrtllm backend, executor workers): LD_PRELOAD of the self-registering plugin library,
    plus the plugin's load-time k0 override when given. Children inherit it."""
    found = find_library(preload=True)
    lib = preload or (str(found) if found else None)
    if not lib:
        raise FileNotFoundError(f"{PRELOAD_LIBRARY_NAME} not found; build the plugin (scripts/check_plugin.sh) or pass its path")
    env = {"LD_PRELOAD": lib + (os.pathsep + os.environ["LD_PRELOAD"] if os.environ.get("LD_PRELOAD") else "")}
    env.update(k0_override_env(k0, k0_schedule))
    return env
