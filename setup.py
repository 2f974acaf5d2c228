"""Build hook of oea-trt (everything else is in pyproject.toml).

A wheel carries the routing kernel's CMake project, plugin/CMakeLists.txt with the kernel
sources beside it, as oea_trt/routing/csrc/, so that an installed package builds
liboea_routing.so on its first use on a GPU machine (oea_trt/routing/library.py) with the same
CMake target as the repository build. plugin/ stays the one copy in the source tree; an
editable install reads it there.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_DIR = Path(__file__).resolve().parent / "plugin"
KERNEL_PATTERNS = ("CMakeLists.txt", "*.cu", "*.cuh", "*.h", "*.map")  # plugin/ itself, not plugin/tensorrt/


def kernel_files():
    return sorted({path for pattern in KERNEL_PATTERNS for path in KERNEL_DIR.glob(pattern)})


class BuildPyWithKernelSources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "oea_trt" / "routing" / "csrc"
        self.mkpath(str(target))
        for path in kernel_files():
            self.copy_file(str(path), str(target / path.name))


# build/python, not setuptools' default build/: `cmake -B build` puts liboea_routing.so in build/lib,
# which would otherwise be packed into the wheel as if it were a package file.
setup(cmdclass={"build_py": BuildPyWithKernelSources}, options={"build": {"build_base": "build/python"}})
