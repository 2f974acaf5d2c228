"""Test support: run a generated Triton repository in a real Triton Inference Server on the CPU.

The server is the one the PyPI wheel nvidia-pytriton ships (tritonserver 2.51 with the Python
backend and one backend stub per Python 3.8-3.13). `.ci/run` installs that wheel with --no-deps
(its own numpy<2 pin is for pytriton's client code, which nothing here uses).

- ``find_server()``: the wheel's tritonserver, Python backend, stubs and bundled libraries, or None.
- ``this_python()`` / ``find_python(version)``: a Python installation the stub can embed (the
  stub links libpython<version>.so.1.0): the one running the tests, or another of the version the
  Triton TensorRT-LLM 1.2.1 containers run (CONTAINER_PYTHON), e.g. a sibling pyenv version.
- ``make_stub_env(root, python)``: what the Python backend's stub needs to run our models. The
  stub is an embedded interpreter in isolated mode: it ignores PYTHONPATH/PYTHONHOME and takes its
  prefix from the first `python3` on PATH, honouring a pyvenv.cfg beside it. So the environment
  is a virtual-environment-shaped folder under `root` holding the containers' numpy and
  transformers (CONTAINER_PACKAGES): for the running interpreter those alone, then a .pth line
  naming its site-packages for the rest; for another one, with all their dependencies. numpy must
  be 1.x for this server: its stub is built with pybind11 2.10, which reads numpy 2 arrays with
  the wrong strides and garbles every input tensor. Nothing outside `root` changes.
- ``make_backend_dir(root, install, python)``: a backend directory with the Python backend (the
  stub of that Python's version) and tests/tensorrtllm_stand_in.py as the `tensorrtllm` backend.
- ``RunningServer``: starts a launch script, waits until the server is ready, and stops it by its
  own process id (its whole process group, stubs included) even when the test fails. The Python
  backend's shared-memory regions get a prefix of their own, so whatever a killed server leaves in
  /dev/shm is removed too.
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

PYTRITON_WHEEL = "nvidia-pytriton==0.7.0"
#: The Triton TensorRT-LLM 1.2.1 containers (tritonserver 26.04 and later, Ubuntu 24.04) run
#: Python 3.12; TensorRT-LLM 1.2.1 pins numpy<2 and transformers==4.57.1 (its requirements.txt).
CONTAINER_PYTHON = "3.12"
CONTAINER_PACKAGES = ("numpy==1.26.4", "transformers==4.57.1")
#: transformers 4.57.1's own pins on what its tokenizers need, installed beside it when the rest
#: of the stub's packages come from the running interpreter; huggingface_hub < 1.0 also needs
#: requests (and its own needs), which a venv with huggingface_hub 1.x (httpx) does not have.
TOKENIZER_PACKAGES = ("tokenizers>=0.22.0,<=0.23.0", "huggingface_hub>=0.34.0,<1.0", "requests", "urllib3", "idna",
                      "charset-normalizer", "certifi")
STAND_IN = Path(__file__).with_name("tensorrtllm_stand_in.py")


@dataclasses.dataclass
class ServerInstall:
    tritonserver: Path      # the binary
    python_backend: Path    # libtriton_python.so + triton_python_backend_utils.py
    stubs: Path             # python_backend_stubs/<major.minor>/triton_python_backend_stub
    libs: Path              # the wheel's bundled shared libraries (the stub needs libcudart from it)

    def stub(self, version: str) -> Path:
        return self.stubs / version / "triton_python_backend_stub"

    def help_text(self) -> str:
        run = subprocess.run([str(self.tritonserver), "--help"], capture_output=True, text=True, timeout=60)
        return run.stdout + run.stderr


def find_server() -> Optional[ServerInstall]:
    """The tritonserver of an installed nvidia-pytriton wheel (found without importing pytriton)."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(list(spec.submodule_search_locations)[0])
    dist = package / "tritonserver"
    install = ServerInstall(tritonserver=dist / "bin" / "tritonserver", python_backend=dist / "backends" / "python",
                            stubs=dist / "python_backend_stubs", libs=package.parent / "nvidia_pytriton.libs")
    return install if install.tritonserver.is_file() else None


@dataclasses.dataclass
class StubPython:
    executable: Path         # <prefix>/bin/python<version>
    version: str             # "3.12"
    libdir: Optional[Path]   # holds libpython<version>.so.1.0 (None: the system's is used)
    running: bool            # the interpreter running the tests


_PROBE = ("import importlib.util, json, sys, sysconfig; v = sysconfig.get_config_var; print(json.dumps({"
          "'version': '%d.%d' % sys.version_info[:2], 'bindir': v('BINDIR'), 'shared': bool(v('Py_ENABLE_SHARED')), "
          "'libdir': v('LIBDIR'), 'pip': importlib.util.find_spec('pip') is not None}))")


def _libpython_loadable(version: str) -> bool:
    try:
        ctypes.CDLL(f"libpython{version}.so.1.0")
    except OSError:
        return False
    return True


def _describe(executable: Path, running: bool) -> Optional[StubPython]:
    try:
        probe = subprocess.run([str(executable), "-c", _PROBE], capture_output=True, text=True, timeout=60)
        facts = json.loads(probe.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0 or not facts["pip"]:
        return None  # not runnable, or no pip to install the stub's packages with
    version, libdir = facts["version"], Path(facts["libdir"]) if facts["shared"] else None
    if libdir is None and not _libpython_loadable(version):
        return None  # a static build, and no libpython of its version for the stub
    base = Path(facts["bindir"]) / f"python{version}"
    return StubPython(base, version, libdir, running) if base.exists() else None


def this_python() -> Optional[StubPython]:
    return _describe(Path(sys.executable), running=True)


def find_python(version: str) -> Optional[StubPython]:
    """An installed Python `version` the stub can embed: on PATH, or beside this one's prefix."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(Path(sys.base_prefix).parent.glob(f"{version}*/bin/python{version}"))
    for candidate in filter(None, candidates):
        python = _describe(Path(candidate), running=False)
        if python is not None and python.version == version:
            return python
    return None


def make_stub_env(root: Path, python: StubPython) -> Tuple[Optional[Dict[str, str]], str]:
    """({PATH prefix, LD_LIBRARY_PATH prefix}, "") for the stub, or (None, why it cannot be made)."""
    site_packages = root / "lib" / f"python{python.version}" / "site-packages"
    (root / "bin").mkdir(parents=True)
    site_packages.mkdir(parents=True)
    for name in ("python3", "python"):
        (root / "bin" / name).symlink_to(python.executable)
    (root / "pyvenv.cfg").write_text(f"home = {python.executable.parent}\ninclude-system-site-packages = false\n")
    if python.running:
        packages, options = CONTAINER_PACKAGES + TOKENIZER_PACKAGES, ["--no-deps"]
    else:
        packages, options = CONTAINER_PACKAGES, []
    pip = subprocess.run([str(python.executable), "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-compile",
                          "--only-binary=:all:", "--disable-pip-version-check", *options,
                          "--target", str(site_packages), *packages], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0:
        return None, f"pip could not install {' '.join(packages)} for the stub: {pip.stderr.strip()[-500:]}"
    if python.running:
        # Read after site-packages: the stub takes `packages` from there and the rest from here.
        (site_packages / "test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return {"PATH": str(root / "bin"), "LD_LIBRARY_PATH": str(python.libdir or "")}, ""


def make_backend_dir(root: Path, install: ServerInstall, python: StubPython) -> Path:
    """root/python (the Python backend with the stub for `python`) and root/tensorrtllm (the stand-in)."""
    backend = root / "python"
    backend.mkdir(parents=True)
    for item in install.python_backend.iterdir():
        if item.is_file():  # skip __pycache__ (pip compiles the backend's .py files where it may)
            shutil.copy2(item, backend / item.name)
    shutil.copy2(install.stub(python.version), backend / "triton_python_backend_stub")
    stand_in = root / "tensorrtllm"
    stand_in.mkdir()
    shutil.copy2(STAND_IN, stand_in / "model.py")
    return root


def free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def post(url: str, body: dict, timeout: float = 60.0) -> Tuple[int, dict]:
    """(HTTP status, JSON body) of a POST; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def post_stream(url: str, body: dict, timeout: float = 60.0) -> Iterator[dict]:
    """The JSON events of a server-sent-events POST (/generate_stream)."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for line in response:
            line = line.decode().strip()
            if line.startswith("data:"):
                yield json.loads(line[len("data:"):])


class RunningServer:
    """`with RunningServer(script, args, env, http_port, log) as server:` -> server.url; the
    stand-in backend's request log is server.stand_in_log."""

    def __init__(self, script: Path, args: List[str], env: Dict[str, str], http_port: int, log: Path,
                 stand_in_log: Optional[Path] = None, ready_timeout: float = 120.0):
        self.shm_prefix = f"oea_test_{uuid.uuid4().hex[:12]}_"
        self.command = [str(script), *args, f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}"]
        self.env, self.log, self.ready_timeout = env, log, ready_timeout
        self.stand_in_log = stand_in_log
        self.url = f"http://127.0.0.1:{http_port}"
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "RunningServer":
        with open(self.log, "wb") as log:
            # Its own session: the launch script execs tritonserver, so the server's pid is this
            # process's and its stubs share its process group.
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        """The server's error lines (E<date> ...), then the end of its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        errors = [line for line in text.splitlines() if line[:1] == "E" and line[1:2].isdigit()]
        return "\n".join(["errors:", *errors[-20:], "log ends:", text[-chars:]])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"tritonserver not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's pid, SIGKILL after 15 s, then SIGKILL to what is left of its group."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stub processes the server left behind
        except (ProcessLookupError, PermissionError):
            pass
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        self.process = None
