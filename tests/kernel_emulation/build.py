"""Build plugin/oea_routing.cu for the CPU against tests/kernel_emulation (tests only).

The kernel source is used as is, except for its inline PTX (cluster barrier, programmatic
dependent launch), which becomes calls into the emulation, and its dynamic shared memory
declaration, which becomes the emulated CTA's buffer. Every rewrite must match, so a change to
those lines in the kernel fails the build here instead of silently emulating something else.
The build defines OEA_ROUTING_DEBUG_KNOBS: the tests pick a path (multi-block, one CTA, the
general kernel, narrow CTAs) with the experiment knobs of the environment.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parents[1] / "plugin"
DEBUG_KNOBS = "-DOEA_ROUTING_DEBUG_KNOBS"  # the experiment knobs of plugin/oea_routing.cu (environment)
SOURCES = ("oea_routing.cu", "oea_routing.h", "oea_routing_keys.cuh", "oea_routing_token.cuh", "oea_routing_decode.cuh")

REWRITES = [  # (pattern, replacement, expected number of matches)
    (r"#if defined\(__CUDA_ARCH__\) && __CUDA_ARCH__ >= 900", "#if 1", 5),
    (r'asm volatile\("barrier\.cluster\.arrive\.release\.aligned;\\n" ::: "memory"\);', "emu::cluster_arrive();", 1),
    (r'asm volatile\("barrier\.cluster\.wait\.acquire\.aligned;\\n" ::: "memory"\);', "emu::cluster_wait();", 1),
    (r'asm volatile\("griddepcontrol\.(wait|launch_dependents);\\n" ::: "memory"\);', "emu::noop();", 2),
    (r"extern __shared__ __align__\(16\) unsigned char smem\[\];", "unsigned char* smem = emu::cta_smem();", 4),
]


def emulated_source() -> str:
    text = (PLUGIN / "oea_routing.cu").read_text()
    for pattern, repl, expected in REWRITES:
        text, n = re.subn(pattern, repl, text)
        if n != expected:
            raise RuntimeError(f"kernel emulation: {pattern!r} matched {n} times in oea_routing.cu, expected {expected}")
    if "asm" in re.sub(r"//.*", "", text):
        raise RuntimeError("kernel emulation: oea_routing.cu has inline PTX the emulation does not know")
    return text


def build(out_dir: Path, sanitize: str = "") -> Path:
    """liboea_routing_emulated.so in out_dir (rebuilt when the sources change)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) on PATH")
    src = emulated_source()
    digest = hashlib.sha256(src.encode())
    for name in SOURCES[1:]:
        digest.update((PLUGIN / name).read_bytes())
    digest.update((HERE / "cuda_emulation.h").read_bytes())
    digest.update((sanitize + DEBUG_KNOBS).encode())
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"liboea_routing_emulated-{digest.hexdigest()[:12]}.so"
    if lib.exists():
        return lib
    cu = out_dir / "oea_routing_emulated.cpp"
    cu.write_text(f'#line 1 "{PLUGIN / "oea_routing.cu"}"\n' + src)
    cmd = [cxx, "-std=c++20", "-O1", "-g", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-Wno-unknown-pragmas", DEBUG_KNOBS, f"-I{HERE}", f"-I{PLUGIN}", str(cu), "-o", str(lib)]
    if sanitize:
        cmd.insert(1, f"-fsanitize={sanitize}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("kernel emulation build failed:\n" + proc.stderr[-4000:])
    return lib


def build_race_driver(out_dir: Path) -> Path:
    """race_driver (ThreadSanitizer build of the emulated kernel + a small driver)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    out_dir.mkdir(parents=True, exist_ok=True)
    cu = out_dir / "oea_routing_emulated_tsan.cpp"
    cu.write_text(f'#line 1 "{PLUGIN / "oea_routing.cu"}"\n' + emulated_source())
    exe = out_dir / "race_driver"
    cmd = [cxx, "-std=c++20", "-O1", "-g", "-fsanitize=thread", "-pthread", "-Wno-unknown-pragmas", DEBUG_KNOBS,
           f"-I{HERE}", f"-I{PLUGIN}", str(cu), str(HERE / "race_driver.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("race driver build failed:\n" + proc.stderr[-4000:])
    return exe
