"""The OEA plugin in every process that deserializes an engine: the launcher's environment, and a
command started through it whose spawned worker (a fresh interpreter, as MPI spawns TensorRT-LLM's
executor workers) has the library loaded, while the same command started plainly does not and
require_preloaded() says how to start it. A small shared library built here stands in for
liboea_routing_trt_preload.so (the real one needs TensorRT headers and nvcc)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oea_trt.integrations.trtllm import launch
from oea_trt.plan.config_file import engine_config_dict, write_engine_config
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.plugin import K0_ENV, K0_SCHEDULE_ENV, PRELOAD_LIBRARY_NAME
from oea_trt.routing.config import OEAConfig

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import json, multiprocessing, sys
from oea_trt.integrations.trtllm import launch

def worker(engine, queue):
    try:
        launch.require_preloaded(engine)
        queue.put("preloaded")
    except launch.PluginLaunchError as exc:
        queue.put(str(exc))

if __name__ == "__main__":
    engine = sys.argv[1]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=worker, args=(engine, queue))
    child.start()
    child.join()
    library = launch.preload_library_for(engine)
    print(json.dumps({"server": launch.is_preloaded(library), "worker": queue.get()}))
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build the stand-in plugin library")
    d = tmp_path_factory.mktemp("oea-engine")
    (d / "plugin.c").write_text("int oea_stand_in_plugin(void) { return 1; }\n")
    library = d / PRELOAD_LIBRARY_NAME
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(d / "plugin.c")], check=True)
    plan = RoutingPlan(base=OEAConfig(num_experts=8, top_k=2, k0=1, fill="invalid"), moe_layers=(0, 1))
    content = engine_config_dict(plan, build={}, model={})
    content["plugin"]["preload_library"] = str(library)
    write_engine_config(str(d / "engine"), content)
    (d / "server.py").write_text(SERVER)
    return d / "engine", library


def _env():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_launch_env_preloads_the_recorded_library_once(engine):
    engine_dir, library = engine
    assert launch.preload_library_for(str(engine_dir)) == library.resolve()
    env = launch.launch_env({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}, library, k0=4, k0_schedule=((8, 3),))
    assert env["LD_PRELOAD"] == f"{library}:/opt/other.so" and env["PATH"] == "/bin"
    assert env[K0_ENV] == "4" and env[K0_SCHEDULE_ENV] == "8:3"
    assert launch.launch_env(env, library)["LD_PRELOAD"] == env["LD_PRELOAD"]


def test_a_missing_library_says_what_to_do(tmp_path):
    with pytest.raises(launch.PluginLaunchError, match="does not exist"):
        launch.preload_library_for(str(tmp_path), str(tmp_path / "nope.so"))
    with pytest.raises(FileNotFoundError, match="not built by `oea-trt build`"):
        launch.preload_library_for(str(tmp_path))


def test_a_launched_command_and_its_spawned_workers_have_the_plugin(engine):
    engine_dir, _ = engine
    done = subprocess.run([sys.executable, "-m", launch.MODULE, str(engine_dir), "--", sys.executable,
                           str(engine_dir.parent / "server.py"), str(engine_dir)],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"server": True, "worker": "preloaded"}


def test_without_the_launcher_the_worker_refuses_and_names_the_command(engine):
    engine_dir, _ = engine
    done = subprocess.run([sys.executable, str(engine_dir.parent / "server.py"), str(engine_dir)],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["server"] is False
    assert f"python -m {launch.MODULE} {engine_dir} --" in result["worker"]


def test_launcher_usage_errors_are_one_line_exit_2(tmp_path, capsys):
    assert launch.main([str(tmp_path), "--plugin-library", str(tmp_path / "x.so"), "--", "true"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        launch.main([str(tmp_path)])
