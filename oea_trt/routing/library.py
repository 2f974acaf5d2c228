"""liboea_routing.so: find it (or build it with nvcc), and call plugin/oea_routing.h through ctypes.

The shared library is the same CUDA source the TensorRT plugin links (plugin/oea_routing.cu), so
Python and TensorRT run one kernel. Where it comes from, first match wins:
  1. $OEA_ROUTING_LIBRARY (a path to liboea_routing.so, e.g. a CMake build),
  2. a CMake build in the repository (build/lib/liboea_routing.so) that is not older than the
     kernel sources,
  3. a one-time nvcc build for this GPU, cached under $OEA_TRT_CACHE (default
     ~/.cache/oea_trt/kernels/<source hash>-sm<arch>/), which needs nvcc and the sources.
CUDA error codes are named with cuda-python (cuda.bindings.runtime) when it is installed.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from oea_trt.routing.config import OEAConfig

LIBRARY_NAME = "liboea_routing.so"
#: Path of liboea_routing.so to use instead of searching / building.
LIBRARY_ENV = "OEA_ROUTING_LIBRARY"
CACHE_ENV = "OEA_TRT_CACHE"
MAX_SCHEDULE = 16  # OEA_MAX_SCHEDULE

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO_ROOT / "plugin"
SOURCE_FILES = ("oea_routing.cu", "oea_routing.h", "oea_routing_keys.cuh", "oea_routing_token.cuh",
                "oea_routing_decode.cuh", "oea_routing.map")

#: logits_type codes of oea_route_launch (enum OeaLogitsType), by torch dtype name.
LOGITS_TYPE = {"float32": 0, "float16": 1, "bfloat16": 2}


class KernelUnavailable(RuntimeError):
    """liboea_routing.so could not be found, built or loaded; the message says what to do."""


class OeaRoutingParams(ctypes.Structure):
    """Mirror of OeaRoutingParams in plugin/oea_routing.h (tests compare the layout with C)."""

    _fields_ = [
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("k0", ctypes.c_int32),
        ("k_max", ctypes.c_int32),
        ("max_rank", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("renormalize", ctypes.c_int32),
        ("fill", ctypes.c_int32),
        ("piggyback_on_context", ctypes.c_int32),
        ("schedule_len", ctypes.c_int32),
        ("schedule_min_decode", ctypes.c_int32 * MAX_SCHEDULE),
        ("schedule_k0", ctypes.c_int32 * MAX_SCHEDULE),
    ]


def params_from_fields(num_experts: int, top_k: int, k0: int, k_max: int, max_rank: int, top_p: float,
                       renormalize: bool, fill: int, piggyback_on_context: bool,
                       schedule: tuple = ()) -> OeaRoutingParams:
    p = OeaRoutingParams()
    p.num_experts, p.top_k, p.k0, p.k_max, p.max_rank = num_experts, top_k, k0, k_max, max_rank
    p.top_p = top_p  # ctypes rounds to float32, the width the reference compares against
    p.renormalize, p.fill, p.piggyback_on_context = int(renormalize), int(fill), int(piggyback_on_context)
    if len(schedule) > MAX_SCHEDULE:
        raise ValueError(f"k0_schedule may hold at most {MAX_SCHEDULE} pairs, got {len(schedule)}")
    p.schedule_len = len(schedule)
    for i, (min_decode, k0_i) in enumerate(schedule):
        p.schedule_min_decode[i] = min_decode
        p.schedule_k0[i] = k0_i
    return p


def config_fields(config: OEAConfig) -> dict:
    """The launcher's view of a validated OEAConfig (k_max, max_rank resolved; fill as its code)."""
    return dict(
        num_experts=config.num_experts, top_k=config.top_k, k0=config.k0, k_max=config.k_max,
        max_rank=config.max_rank, top_p=config.top_p, renormalize=config.renormalize,
        fill=config.fill_code, piggyback_on_context=config.piggyback_on_context,
        schedule=tuple(tuple(p) for p in config.k0_schedule or ()),
    )


@functools.lru_cache(maxsize=256)
def params_for(config: OEAConfig) -> OeaRoutingParams:
    return params_from_fields(**config_fields(config))


def cuda_error_text(code: int) -> str:
    """'cudaErrorXxx: description' via cuda-python, else the bare code."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return f"CUDA error {code} (install cuda-python to see its name)"
    try:
        err = cudart.cudaError_t(code)
        _, name = cudart.cudaGetErrorName(err)
        _, text = cudart.cudaGetErrorString(err)
        return f"{name.decode()}: {text.decode()}"
    except Exception:  # noqa: BLE001 (an unknown code must not hide the original failure)
        return f"CUDA error {code}"


class KernelLibrary:
    """The loaded liboea_routing.so with typed entry points."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise KernelUnavailable(f"cannot load {self.path}: {exc}") from None
        lib.oea_validate_params.argtypes = [ctypes.POINTER(OeaRoutingParams)]
        lib.oea_validate_params.restype = ctypes.c_char_p
        lib.oea_workspace_size.argtypes = [ctypes.POINTER(OeaRoutingParams), ctypes.c_int64]
        lib.oea_workspace_size.restype = ctypes.c_size_t
        vp = ctypes.c_void_p
        lib.oea_route_launch.argtypes = [
            ctypes.POINTER(OeaRoutingParams), vp, ctypes.c_int32, vp, ctypes.c_int64, ctypes.c_int64,
            vp, vp, vp, vp, vp, ctypes.c_size_t, vp,
        ]
        lib.oea_route_launch.restype = ctypes.c_int
        lib.oea_route_launch_signal.argtypes = [
            ctypes.POINTER(OeaRoutingParams), vp, ctypes.c_int32, vp, ctypes.c_int64, ctypes.c_int64,
            vp, vp, vp, vp, vp, vp, ctypes.c_size_t, vp,
        ]
        lib.oea_route_launch_signal.restype = ctypes.c_int
        self._lib = lib

    def validate(self, params: OeaRoutingParams) -> Optional[str]:
        msg = self._lib.oea_validate_params(ctypes.byref(params))
        return None if msg is None else msg.decode()

    def workspace_size(self, params: OeaRoutingParams, num_tokens: int) -> int:
        return int(self._lib.oea_workspace_size(ctypes.byref(params), num_tokens))

    def launch(self, params: OeaRoutingParams, logits: int, logits_type: int, token_kind: int,
               num_leading_context: int, num_tokens: int, expert_ids: int, weights: int,
               active_mask: int, num_active: int, workspace: int, workspace_bytes: int, stream: int,
               active_ready: int = 0) -> int:
        """oea_route_launch (active_ready 0) or oea_route_launch_signal with raw device pointers
        (0 = NULL); returns the cudaError_t code."""
        return int(self._lib.oea_route_launch_signal(
            ctypes.byref(params), logits or None, logits_type, token_kind or None, num_leading_context,
            num_tokens, expert_ids or None, weights or None, active_mask or None, num_active or None,
            active_ready or None, workspace or None, workspace_bytes, stream or None))


# ---- finding or building the library -------------------------------------------------------
def source_digest() -> str:
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        h.update(name.encode())
        h.update((PLUGIN_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def _sources_present() -> bool:
    return all((PLUGIN_DIR / name).is_file() for name in SOURCE_FILES)


def _newest_source_mtime() -> float:
    return max((PLUGIN_DIR / name).stat().st_mtime for name in SOURCE_FILES)


def build_dir_candidates() -> list:
    return [REPO_ROOT / "build" / "lib" / LIBRARY_NAME, REPO_ROOT / "build" / LIBRARY_NAME]


def find_prebuilt() -> Optional[Path]:
    """$OEA_ROUTING_LIBRARY, else a repository CMake build no older than the sources."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise KernelUnavailable(f"${LIBRARY_ENV}={env} is not a file; point it at a built {LIBRARY_NAME}")
        return path
    fresh_after = _newest_source_mtime() if _sources_present() else 0.0
    for path in build_dir_candidates():
        if path.is_file() and path.stat().st_mtime >= fresh_after:
            return path
    return None


def find_nvcc() -> Optional[str]:
    for candidate in (os.environ.get("OEA_NVCC"),
                      os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "nvcc") if os.environ.get("CUDA_HOME") else None,
                      shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "oea_trt") / "kernels"


def nvcc_command(nvcc: str, arch: str, output: Path) -> list:
    """nvcc line that builds liboea_routing.so for compute capability `arch` (e.g. "90")."""
    return [
        nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-cudart", "static",
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        f"-Xlinker=--version-script={PLUGIN_DIR / 'oea_routing.map'}",
        "-o", str(output), str(PLUGIN_DIR / "oea_routing.cu"),
    ]


def build_library(arch: str, nvcc: Optional[str] = None, root: Optional[Path] = None) -> Path:
    """Compile liboea_routing.so for sm_<arch> into the cache (once per source version)."""
    if not _sources_present():
        raise KernelUnavailable(
            f"the kernel sources are not at {PLUGIN_DIR} (a non-editable install?): build {LIBRARY_NAME} with "
            f"CMake (cmake -S <repo> -B build && cmake --build build) and set ${LIBRARY_ENV}")
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise KernelUnavailable(
            f"no nvcc to build {LIBRARY_NAME} (set $CUDA_HOME or $OEA_NVCC, or build with CMake and set ${LIBRARY_ENV})")
    target_dir = (root or cache_root()) / f"{source_digest()}-sm{arch}"
    target = target_dir / LIBRARY_NAME
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(target_dir / ".lock"):
        if target.is_file():  # another process built it while we waited
            return target
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target_dir)
        os.close(fd)
        cmd = nvcc_command(nvcc, arch, Path(tmp))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            os.unlink(tmp)
            raise KernelUnavailable(f"nvcc failed building {LIBRARY_NAME} for sm_{arch}:\n{proc.stderr[-4000:]}")
        os.replace(tmp, target)
    return target


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _current_arch() -> str:
    import torch

    if not torch.cuda.is_available():
        raise KernelUnavailable(f"no CUDA GPU to build {LIBRARY_NAME} for; build it with CMake and set ${LIBRARY_ENV}")
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        raise KernelUnavailable(f"the routing kernel needs compute capability >= 8.0, this GPU is {major}.{minor}")
    return f"{major}{minor}"


_LOADED: dict = {}


def load_library(path: Optional[os.PathLike] = None) -> KernelLibrary:
    """The kernel library (cached per path): `path`, else prebuilt, else built for this GPU."""
    if path is None:
        path = find_prebuilt()
        if path is None:
            path = build_library(_current_arch())
    key = str(Path(path).resolve())
    if key not in _LOADED:
        _LOADED[key] = KernelLibrary(Path(path))
    return _LOADED[key]
