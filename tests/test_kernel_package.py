"""oea-trt installed from its wheel, away from the checkout: the wheel carries the routing kernel's
CMake project and sources (oea_trt/routing/csrc/, copied from plugin/ by setup.py), and the
installed copy builds liboea_routing.so through that project into its cache and loads it.
No GPU is needed: the build targets sm_90 explicitly and loading the library needs none."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from oea_trt.routing import library as kernel_library

REPO = Path(__file__).resolve().parents[1]
# What a wheel build reads (pyproject.toml, setup.py, MANIFEST.in and the trees they name).
WHEEL_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CMakeLists.txt", "oea_trt", "plugin")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps --no-build-isolation` of a copy of the sources (so no build/ left in
    the checkout by an earlier build can leak into the wheel)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "lib")
    for name in WHEEL_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                           "-w", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = out.glob("oea_trt-*.whl")
    return built


def test_the_wheel_carries_the_kernel_cmake_project(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        csrc = {n.rsplit("/", 1)[1] for n in names if n.startswith("oea_trt/routing/csrc/")}
        assert csrc == set(kernel_library.SOURCE_FILES), csrc
        for name in kernel_library.SOURCE_FILES:
            assert archive.read(f"oea_trt/routing/csrc/{name}") == (REPO / "plugin" / name).read_bytes(), name
        assert "oea_trt/routing/library.py" in names
        assert not [n for n in names if n.endswith(".so")]  # the library is built per GPU, never shipped


@pytest.mark.slow  # one cmake configure + nvcc build of the kernel library: minutes on 2 cores
def test_an_installed_package_builds_and_loads_the_kernel_outside_the_checkout(wheel, tmp_path):
    if not shutil.which("cmake") or kernel_library.find_nvcc() is None:
        pytest.skip("needs cmake and nvcc")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel installs by unpacking
    code = """
import json, os
from oea_trt.routing import library
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.params import kernel_params
first = library.build_library("90")
stamp = os.stat(first).st_mtime_ns
again = library.build_library("90")
lib = library.KernelLibrary(first)
params = kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3, k0_schedule=((8, 4),)))
print(json.dumps({"package": library.__file__, "sources": str(library.kernel_sources()), "library": str(first),
                  "again": str(again), "rebuilt": os.stat(again).st_mtime_ns != stamp,
                  "valid": lib.validate(params), "workspace": lib.workspace_size(params, 16)}))
"""
    env = {k: v for k, v in os.environ.items() if k not in (kernel_library.LIBRARY_ENV, "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), OEA_TRT_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site))  # the installed copy, not the checkout
    assert out["sources"] == str(site / "oea_trt" / "routing" / "csrc")
    assert out["library"].startswith(str(tmp_path / "cache" / "kernels")) and out["library"].endswith("-sm90/liboea_routing.so")
    assert out["again"] == out["library"] and not out["rebuilt"]  # cached per source digest and arch
    assert out["valid"] is None and out["workspace"] > 0
