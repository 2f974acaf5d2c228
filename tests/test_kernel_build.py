"""The routing kernel builds with CMake + nvcc on a machine without a GPU (CI), exports exactly the
launcher API, spills no registers, installs where the package looks first, and its C entry
points work through the Python binding.

One CMake build of the repository (sm_90, ptxas report on) is shared by every test here.
"""
import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from oea_trt.routing import library as kernel_library
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.library import KernelLibrary
from oea_trt.routing.params import LAUNCH_PDL, OeaRoutingParams, kernel_params

REPO = Path(__file__).resolve().parents[1]
API = {"oea_validate_params", "oea_workspace_size", "oea_route_launch", "oea_routing_api_version"}
DEBUG_KNOBS = (b"OEA_ROUTING_FORCE_MULTIBLOCK", b"OEA_ROUTING_MAX_CLUSTER", b"OEA_ROUTING_GENERAL",
               b"OEA_ROUTING_WARPS_PER_CTA", b"OEA_ROUTING_PDL")

pytestmark = pytest.mark.slow  # one nvcc build of ~70 kernels: minutes on 2 cores


def tool(name):
    path = shutil.which(name) or (f"/usr/local/cuda/bin/{name}" if name == "nvcc" else None)
    if not path or not os.path.exists(path):
        pytest.skip(f"needs {name} (CUDA toolkit / CMake), absent here")
    return path


@pytest.fixture(scope="module")
def kernel_build(tmp_path_factory):
    tool("cmake")
    nvcc = tool("nvcc")
    build = tmp_path_factory.mktemp("kernel-build")
    configure = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DOEA_PTXAS_VERBOSE=ON",
         "-DOEA_WERROR=ON"],
        capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    jobs = str(max(1, os.cpu_count() or 1))
    result = subprocess.run(["cmake", "--build", str(build), "--target", "oea_routing", "oea_routing_kernel",
                             "-j", jobs], capture_output=True, text=True)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return build, log


def test_shared_library_exports_exactly_the_launcher_api(kernel_build):
    build, _ = kernel_build
    so = build / "lib" / "liboea_routing.so"
    assert so.is_file()
    nm = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    assert exported == API, exported
    # The static PIC library the TensorRT plugin links holds the same entry points.
    static = build / "lib" / "liboea_routing_kernel.a"
    assert static.is_file()
    nm = subprocess.run(["nm", "--defined-only", str(static)], capture_output=True, text=True, check=True)
    assert API <= {line.split()[-1] for line in nm.stdout.splitlines() if " T " in line}


def test_the_shipping_library_has_no_experiment_knobs(kernel_build):
    """Without OEA_ROUTING_DEBUG_KNOBS the library reads no OEA_ROUTING_* variable at all."""
    build, _ = kernel_build
    for binary in (build / "lib" / "liboea_routing.so", build / "lib" / "liboea_routing_kernel.a"):
        data = binary.read_bytes()
        assert not [knob for knob in DEBUG_KNOBS if knob in data], binary
    assert "OEA_ROUTING_DEBUG_KNOBS:BOOL=OFF" in (build / "CMakeCache.txt").read_text()


def test_every_kernel_compiles_without_spills_or_local_memory(kernel_build):
    _, log = kernel_build
    entries = re.findall(r"Compiling entry function '(\w+)' for 'sm_90'", log)
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    registers = [int(r) for r in re.findall(r"Used (\d+) registers", log)]
    # 3 logit types x (6 row layouts x (fused, phase 1, phase 2) + 4 register layouts x decode)
    assert len(entries) == 66, entries
    assert len(frames) >= len(entries) and len(registers) >= len(entries)
    assert all(f == ("0", "0", "0") for f in frames), frames
    assert max(registers) <= 128  # 512-thread CTAs: at most 128 registers per thread


def test_cmake_install_puts_the_library_where_the_package_looks_first(kernel_build, tmp_path):
    build, _ = kernel_build
    cache = (build / "CMakeCache.txt").read_text()
    assert f"OEA_ROUTING_INSTALL_DIR:PATH={kernel_library.INSTALLED_LIBRARY.parent}" in cache
    # DESTDIR: the absolute destination, staged under tmp_path instead of this checkout.
    done = subprocess.run(["cmake", "--install", str(build)], env={**os.environ, "DESTDIR": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    staged = tmp_path / str(kernel_library.INSTALLED_LIBRARY).lstrip("/")
    assert staged.is_file()
    assert kernel_library.installed_library(staged) == staged  # fresh: newer than the sources
    assert KernelLibrary(staged).validate(kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3))) is None


def test_params_struct_matches_the_c_header(kernel_build, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("needs a C++ compiler")
    src = tmp_path / "layout.cpp"
    src.write_text(
        '#include <cstddef>\n#include <cstdio>\n#include "oea_routing.h"\n'
        "#define F(name) std::printf(#name \" %zu\\n\", offsetof(OeaRoutingParams, name));\n"
        "int main() { std::printf(\"size %zu\\n\", sizeof(OeaRoutingParams));\n"
        + "".join(f"F({name})" for name, _ in OeaRoutingParams._fields_) + " return 0; }\n")
    exe = tmp_path / "layout"
    subprocess.run([cxx, "-std=c++17", f"-I{REPO / 'plugin'}", "-I/usr/local/cuda/include", str(src), "-o", str(exe)],
                   check=True, capture_output=True)
    out = dict(line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True)
               .stdout.splitlines())
    assert int(out["size"]) == ctypes.sizeof(OeaRoutingParams)
    for name, _ in OeaRoutingParams._fields_:
        assert int(out[name]) == getattr(OeaRoutingParams, name).offset, name


@pytest.fixture(scope="module")
def library(kernel_build):
    build, _ = kernel_build
    return KernelLibrary(build / "lib" / "liboea_routing.so")


def test_c_validator_accepts_every_valid_config(library):
    for cfg in [OEAConfig(num_experts=128, top_k=8, k0=3),
                OEAConfig(num_experts=4096, top_k=16, k0=1, k_max=4096, max_rank=1, top_p=0.3, fill="top1",
                          renormalize=False, piggyback_on_context=False, k0_schedule=((0, 16), (7, 2), (300, 1))),
                OEAConfig(num_experts=1, top_k=1, k0=1)]:
        assert library.validate(kernel_params(cfg)) is None, cfg


@pytest.mark.parametrize("change, field", [
    (dict(num_experts=0), "num_experts"), (dict(num_experts=4097), "num_experts"), (dict(top_k=0), "top_k"),
    (dict(k_max=7), "k_max"), (dict(k0=0), "k0"), (dict(k0=9), "k0"), (dict(max_rank=129), "max_rank"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_p=float("nan")), "top_p"),
    (dict(renormalize=2), "renormalize"), (dict(fill=3), "fill"), (dict(piggyback_on_context=-1), "piggyback"),
    (dict(schedule_len=2, schedule_min_decode=(4, 4), schedule_k0=(3, 2)), "ascending"),
    (dict(schedule_len=1, schedule_min_decode=(-1,), schedule_k0=(3,)), "schedule_min_decode"),
    (dict(schedule_len=1, schedule_min_decode=(4,), schedule_k0=(9,)), "schedule_k0"),
])
def test_c_validator_names_the_bad_field(library, change, field):
    params = dataclasses.replace(kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3)), **change)
    message = library.validate(params)
    assert message is not None and field in message, message


def test_workspace_size_grows_with_tokens_and_covers_the_stash(library):
    params = kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3))
    sizes = [library.workspace_size(params, t) for t in (0, 1, 256, 4096)]
    assert sizes == sorted(sizes) and sizes[0] >= 2 * 4 * 4  # two bitmasks of 4 words
    assert sizes[3] - sizes[0] == 4096 * 12  # 12 bytes of phase-1 state per token


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_launch_without_a_gpu_returns_an_error_instead_of_crashing(library):
    params = kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3))
    # T = 0: valid arguments, no device.
    assert library.launch(params, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, LAUNCH_PDL, 0) != 0
    # Refused before any device call (cudaErrorInvalidValue): a bad dtype with NULL outputs, an
    # unknown launch flag.
    assert library.launch(params, 0, 7, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0) == 1
    assert library.launch(params, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 << 5, 0) == 1
