"""liboea_routing.so: find it, or build it through CMake, and call plugin/oea_routing.h through ctypes.

The shared library is the same CUDA source the TensorRT plugin links (plugin/oea_routing.cu), so
Python and TensorRT run one kernel. Where it comes from, first match wins:
  1. load_library(path), else $OEA_ROUTING_LIBRARY (a built liboea_routing.so);
  2. the package's lib/ directory (oea_trt/routing/lib/liboea_routing.so), where `cmake --install`
     of a repository build puts it; skipped when older than the kernel sources next to it;
  3. a build for this GPU, once per source version, cached under $OEA_TRT_CACHE (default
     ~/.cache/oea_trt)/kernels/<source digest>-sm<arch>/. It configures the kernel's own CMake
     project (kernel_sources(): oea_trt/routing/csrc/ in a wheel, plugin/ in a checkout) and
     builds its target oea_routing, the target the repository build makes too. Needs cmake and
     nvcc ($CUDACXX, $CUDA_HOME/bin, PATH or /usr/local/cuda/bin).
CUDA error codes are named with cuda-python (cuda.bindings.runtime) when it is installed.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Union

from oea_trt.routing.params import KernelParams, OeaRoutingParams

LIBRARY_NAME = "liboea_routing.so"
#: Path of liboea_routing.so to use instead of searching / building.
LIBRARY_ENV = "OEA_ROUTING_LIBRARY"
CACHE_ENV = "OEA_TRT_CACHE"
#: OEA_ROUTING_API_VERSION of plugin/oea_routing.h that this binding speaks.
API_VERSION = 3
#: CMake target of the kernel library (plugin/CMakeLists.txt), in the repository build and here.
CMAKE_TARGET = "oea_routing"

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where `cmake --install` of a repository build puts the library (OEA_ROUTING_INSTALL_DIR).
INSTALLED_LIBRARY = PACKAGE_DIR / "lib" / LIBRARY_NAME
#: The kernel's sources and CMake project as a wheel carries them (setup.py copies plugin/ here).
PACKAGED_SOURCES = PACKAGE_DIR / "csrc"
#: The same files in a source checkout (editable install).
CHECKOUT_SOURCES = PACKAGE_DIR.parents[1] / "plugin"
SOURCE_FILES = ("CMakeLists.txt", "oea_routing.cu", "oea_routing.h", "oea_routing.map", "oea_routing_decode.cuh",
                "oea_routing_keys.cuh", "oea_routing_token.cuh")


class KernelUnavailable(RuntimeError):
    """liboea_routing.so could not be found, built or loaded; the message says what to do."""


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
    """The loaded liboea_routing.so with typed entry points (refuses another API version)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise KernelUnavailable(f"cannot load {self.path}: {exc}") from None
        version = getattr(lib, "oea_routing_api_version", None)
        found = None
        if version is not None:
            version.argtypes, version.restype = [], ctypes.c_int32
            found = int(version())
        if found != API_VERSION:
            raise KernelUnavailable(
                f"{self.path} implements routing API version {found or '< 3'}, this package needs version "
                f"{API_VERSION}: rebuild it from this package's sources (or unset ${LIBRARY_ENV} / remove it)")
        params = ctypes.POINTER(OeaRoutingParams)
        lib.oea_validate_params.argtypes = [params]
        lib.oea_validate_params.restype = ctypes.c_char_p
        lib.oea_workspace_size.argtypes = [params, ctypes.c_int64]
        lib.oea_workspace_size.restype = ctypes.c_size_t
        vp = ctypes.c_void_p
        lib.oea_route_launch.argtypes = [
            params, vp, ctypes.c_int32, vp, ctypes.c_int64, ctypes.c_int64,
            vp, vp, vp, vp, vp, vp, ctypes.c_size_t, ctypes.c_uint32, vp,
        ]
        lib.oea_route_launch.restype = ctypes.c_int
        self.lib = lib

    def validate(self, params: KernelParams) -> Optional[str]:
        """oea_validate_params: None when valid, else the message naming the field."""
        msg = self.lib.oea_validate_params(ctypes.byref(params.struct))
        return None if msg is None else msg.decode()

    def workspace_size(self, params: KernelParams, num_tokens: int) -> int:
        return int(self.lib.oea_workspace_size(ctypes.byref(params.struct), num_tokens))

    def launch(self, params: KernelParams, logits: int, logits_type: int, token_kind: int,
               num_leading_context: int, num_tokens: int, expert_ids: int, weights: int,
               active_mask: int, num_active: int, active_ready: int, workspace: int, workspace_bytes: int,
               launch_flags: int, stream: int) -> int:
        """oea_route_launch with raw device pointers (0 = NULL); returns the cudaError_t code."""
        return int(self.lib.oea_route_launch(
            ctypes.byref(params.struct), logits or None, logits_type, token_kind or None, num_leading_context,
            num_tokens, expert_ids or None, weights or None, active_mask or None, num_active or None,
            active_ready or None, workspace or None, workspace_bytes, launch_flags, stream or None))


# ---- finding or building the library -------------------------------------------------------
def kernel_sources() -> Optional[Path]:
    """The directory holding the kernel's CMake project: the wheel's copy, else the checkout's."""
    for directory in (PACKAGED_SOURCES, CHECKOUT_SOURCES):
        if all((directory / name).is_file() for name in SOURCE_FILES):
            return directory
    return None


def source_digest(sources: Path) -> str:
    h = hashlib.sha256()
    for name in SOURCE_FILES:
        h.update(name.encode())
        h.update((sources / name).read_bytes())
    return h.hexdigest()[:16]


def find_prebuilt() -> Optional[Path]:
    """$OEA_ROUTING_LIBRARY, else the installed library when no kernel source is newer."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise KernelUnavailable(f"${LIBRARY_ENV}={env} is not a file; point it at a built {LIBRARY_NAME}")
        return path
    return installed_library()


def installed_library(path: Path = INSTALLED_LIBRARY) -> Optional[Path]:
    if not path.is_file():
        return None
    sources = kernel_sources()
    if sources is not None:
        newest = max((sources / name).stat().st_mtime for name in SOURCE_FILES)
        if path.stat().st_mtime < newest:
            warnings.warn(f"oea_trt: ignoring {path}: it is older than the kernel sources in {sources} "
                          f"(re-run cmake --build and cmake --install)", RuntimeWarning, stacklevel=3)
            return None
    return path


def find_nvcc() -> Optional[str]:
    cuda_home = os.environ.get("CUDA_HOME")
    for candidate in (os.environ.get("CUDACXX"), os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None,
                      shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "oea_trt") / "kernels"


def cmake_commands(sources: Path, build_dir: Path, arch: str, nvcc: str, debug_knobs: bool = False,
                   jobs: Optional[int] = None) -> list:
    """The configure and build commands of the kernel library for sm_<arch> (e.g. "90")."""
    configure = ["cmake", "-S", str(sources), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_ARCHITECTURES={arch}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
                 f"-DOEA_ROUTING_DEBUG_KNOBS={'ON' if debug_knobs else 'OFF'}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    build = ["cmake", "--build", str(build_dir), "--target", CMAKE_TARGET, "-j", str(jobs or os.cpu_count() or 1)]
    return [configure, build]


def build_library(arch: str, root: Optional[Path] = None, debug_knobs: bool = False) -> Path:
    """liboea_routing.so for sm_<arch>, built once per source version into the cache.

    debug_knobs: a separate build with OEA_ROUTING_DEBUG_KNOBS on, whose launch shape follows
    the experiment variables of plugin/oea_routing.cu (A/B timing runs and path tests only).
    """
    sources = kernel_sources()
    if sources is None:
        raise KernelUnavailable(
            f"the kernel sources are neither at {PACKAGED_SOURCES} nor at {CHECKOUT_SOURCES}: reinstall oea-trt "
            f"from its wheel or sdist, or build {LIBRARY_NAME} with CMake and set ${LIBRARY_ENV}")
    if shutil.which("cmake") is None:
        raise KernelUnavailable(f"no cmake on PATH to build {LIBRARY_NAME} (install cmake >= 3.18, or build the "
                                f"library elsewhere and set ${LIBRARY_ENV})")
    nvcc = find_nvcc()
    if nvcc is None:
        raise KernelUnavailable(f"no nvcc to build {LIBRARY_NAME} (set $CUDACXX or $CUDA_HOME, or build the library "
                                f"elsewhere and set ${LIBRARY_ENV})")
    target_dir = (root or cache_root()) / f"{source_digest(sources)}-sm{arch}{'-debug-knobs' if debug_knobs else ''}"
    target = target_dir / LIBRARY_NAME
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(target_dir / ".lock"):
        if target.is_file():  # another process built it while we waited
            return target
        with tempfile.TemporaryDirectory(prefix=".build-", dir=target_dir) as build_dir:
            for command in cmake_commands(sources, Path(build_dir), arch, nvcc, debug_knobs):
                done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if done.returncode != 0:
                    raise KernelUnavailable(f"building {LIBRARY_NAME} for sm_{arch} failed: {' '.join(command)}\n"
                                            f"{done.stdout[-4000:]}")
            built = Path(build_dir) / "lib" / LIBRARY_NAME
            staged = target_dir / f".{LIBRARY_NAME}.{os.getpid()}"
            shutil.copyfile(built, staged)
            os.replace(staged, target)
    return target


@contextlib.contextmanager
def file_lock(path: Path):
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def current_arch() -> str:
    """This process's GPU as a CMake architecture ("90"); raises KernelUnavailable without one."""
    import torch

    if not torch.cuda.is_available():
        raise KernelUnavailable(f"no CUDA GPU to build {LIBRARY_NAME} for; build it with CMake and set ${LIBRARY_ENV}")
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        raise KernelUnavailable(f"the routing kernel needs compute capability >= 8.0, this GPU is {major}.{minor}")
    return f"{major}{minor}"


_LOADED: dict = {}  # resolved path -> KernelLibrary; None -> the default one, once found


def use_library(path: Union[str, os.PathLike]) -> KernelLibrary:
    """Make `path` the library every launch of this process uses from now on (A/B runs of a
    debug-knob build, say)."""
    _LOADED[None] = load_library(path)
    return _LOADED[None]


def load_library(path: Optional[Union[str, os.PathLike]] = None) -> KernelLibrary:
    """The kernel library (cached): `path`, else the first of the lookup above (searched once
    per process: every launch asks for it)."""
    if path is None:
        if None not in _LOADED:
            found = find_prebuilt() or build_library(current_arch())
            _LOADED[None] = load_library(found)
        return _LOADED[None]
    key = str(Path(path).resolve())
    if key not in _LOADED:
        _LOADED[key] = KernelLibrary(Path(path))
    return _LOADED[key]
