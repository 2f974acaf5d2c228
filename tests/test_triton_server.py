"""`oea-trt triton-repo` served by a real Triton Inference Server on the CPU (nvidia-pytriton's
tritonserver 2.51), with tests/tensorrtllm_stand_in.py in place of TensorRT-LLM's `tensorrtllm`
backend: the repository is written for an engine directory laid out as TensorRT-LLM 1.2.1 writes
it, started through its own launch_triton.sh on free local ports, and asked for text through
/v2/models/ensemble/generate(_stream). The stand-in checks every tensor the real backend would
read and logs it; the tests check the texts and what arrived where.
"""
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from oea_trt.cli import main
from oea_trt.plan.config_file import engine_config_dict, write_engine_config
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import OEAConfig
from triton_server_harness import (CONTAINER_PACKAGES, CONTAINER_PYTHON, PYTRITON_WHEEL, RunningServer, find_python,
                                   find_server, free_ports, make_backend_dir, make_stub_env, post, post_stream,
                                   this_python)

pytestmark = [pytest.mark.triton_server, pytest.mark.slow]

MAX_INPUT_LEN = 32  # the engine's build_config.max_input_len


@pytest.fixture(scope="module")
def server_install():
    install = find_server()
    if install is None:
        pytest.skip(f"needs the tritonserver of the PyPI wheel {PYTRITON_WHEEL} "
                    f"(pip install --no-deps {PYTRITON_WHEEL}; .ci/run does)")
    return install


@pytest.fixture(scope="module")
def stub_pythons(server_install):
    """{"plain": the containers' Python where installed here, else this one; "streaming": this one}."""
    this = this_python()
    if this is None:
        pytest.skip(f"the backend stub needs a libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0: "
                    f"{sys.executable} is a static build and none is installed")
    container = this if this.version == CONTAINER_PYTHON else find_python(CONTAINER_PYTHON)
    return {"plain": container or this, "streaming": this}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from oea_trt.data import save_hf_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    save_hf_tokenizer(str(directory))
    return directory


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    """An engine directory as TensorRT-LLM 1.2.1's trtllm-build leaves it, plus oea-trt build's
    oea_config.json; the stand-in never reads rank0.engine's bytes."""
    d = tmp_path_factory.mktemp("engine")
    (d / "config.json").write_text(json.dumps({
        "version": "1.2.1",
        "pretrained_config": {
            "architecture": "Qwen3MoeForCausalLM", "dtype": "bfloat16", "vocab_size": 100,
            "mapping": {"world_size": 1, "gpus_per_node": 8, "cp_size": 1, "tp_size": 1, "pp_size": 1,
                        "moe_tp_size": 1, "moe_ep_size": 1, "moe_cluster_size": 1, "auto_parallel": False},
        },
        "build_config": {"max_input_len": MAX_INPUT_LEN, "max_seq_len": 64, "max_batch_size": 8,
                         "max_beam_width": 1, "max_num_tokens": 256, "kv_cache_type": "PAGED",
                         "gather_context_logits": False, "gather_generation_logits": False},
    }))
    (d / "rank0.engine").write_bytes(b"\0" * 16)
    plan = RoutingPlan(base=OEAConfig(num_experts=128, top_k=8, k0=3), moe_layers=tuple(range(48)))
    write_engine_config(str(d), engine_config_dict(plan, build={}, model={}))
    return d


@contextlib.contextmanager
def _serve(tmp_path_factory, install, python, engine_dir, tokenizer_dir, *, streaming):
    """The running server; its stub environment (~150 MB) is deleted when it stops."""
    root = tmp_path_factory.mktemp("streaming" if streaming else "plain")
    try:
        stub_env, why = make_stub_env(root / f"stub_env_{python.version}", python)
        if stub_env is None:
            pytest.skip(why)
        with _new_repository_server(root, install, python, stub_env, engine_dir, tokenizer_dir, streaming) as server:
            yield server
    finally:
        shutil.rmtree(root / f"stub_env_{python.version}", ignore_errors=True)


def _new_repository_server(root, install, python, stub_env, engine_dir, tokenizer_dir, streaming):
    """`oea-trt triton-repo` into root/out on free ports; the (not yet started) server for it."""
    http, grpc, metrics = free_ports(3)
    # The plugin library stands for the OEA plugin (which needs CUDA): one the server links anyway.
    preload = next(install.libs.glob("libb64-*.so*"))
    cli = ["triton-repo", str(engine_dir), "--tokenizer-dir", str(tokenizer_dir), "-o", str(root / "out"),
           "--plugin-library", str(preload), "--http-port", str(http), "--grpc-port", str(grpc),
           "--metrics-port", str(metrics)] + (["--streaming"] if streaming else [])
    assert main(cli) == 0
    backends = make_backend_dir(root / "backends", install, python)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OEA_PLUGIN_LIBRARY")}
    env["PATH"] = f"{stub_env['PATH']}:{install.tritonserver.parent}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (stub_env["LD_LIBRARY_PATH"], str(install.libs),
                                                  env.get("LD_LIBRARY_PATH", "")) if p)
    # Our configs are complete: without auto-completion each Python model starts one stub, not two.
    args = [f"--backend-directory={backends}", "--disable-auto-complete-config", "--exit-timeout-secs=5"]
    return RunningServer(root / "out" / "launch_triton.sh", args, env, http, root / "server.log",
                         stand_in_log=backends / "tensorrtllm" / "requests.jsonl")


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, server_install, stub_pythons, engine_dir, tokenizer_dir):
    python = stub_pythons["plain"]
    with _serve(tmp_path_factory, server_install, python, engine_dir, tokenizer_dir, streaming=False) as server:
        yield server


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory, server_install, stub_pythons, engine_dir, tokenizer_dir):
    python = stub_pythons["streaming"]
    with _serve(tmp_path_factory, server_install, python, engine_dir, tokenizer_dir, streaming=True) as server:
        yield server


def _received(server):
    """The stand-in's log: one {inputs, error, decoupled} per request it got."""
    if not server.stand_in_log.exists():
        return []
    return [json.loads(line) for line in server.stand_in_log.read_text().splitlines()]


def _expected(tokenizer, prompt, max_tokens):
    """The stand-in repeats the prompt's ids to max_tokens tokens; postprocessing decodes them."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return tokenizer.decode([ids[i % len(ids)] for i in range(max_tokens)], skip_special_tokens=True)


def _generate(server, body):
    status, reply = post(f"{server.url}/v2/models/ensemble/generate", body)
    assert status == 200, f"{status} {reply}\n{server.log_tail()}"
    return reply["text_output"]


def _assert_stub_ran(got, python):
    """The stub ran the containers' numpy and transformers, under the Python chosen for it."""
    stub = got["stub"]
    assert {f"numpy=={stub['numpy']}", f"transformers=={stub['transformers']}"} == set(CONTAINER_PACKAGES), stub
    assert stub["python"].rsplit(".", 1)[0] == python.version, stub


def _request_for(server, prompt_ids):
    matches = [r for r in _received(server) if r["inputs"]["input_ids"]["values"] == prompt_ids]
    assert len(matches) == 1, f"the stand-in got {len(matches)} requests with input_ids {prompt_ids}"
    return matches[0]


def test_launch_script_flags_are_this_servers(server_install, tmp_path, engine_dir, tokenizer_dir):
    out = tmp_path / "out"
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(tokenizer_dir), "-o", str(out)]) == 0
    exec_line = next(line for line in (out / "launch_triton.sh").read_text().splitlines()
                     if line.startswith("exec tritonserver"))
    flags = re.findall(r"(--[a-z][a-z-]*)=", exec_line)
    assert {"--model-repository", "--http-port", "--grpc-port", "--metrics-port"} <= set(flags)
    help_text = server_install.help_text()
    assert "--backend-directory" in help_text  # the flag the tests add
    missing = [flag for flag in flags if f"{flag} " not in help_text]
    assert not missing, f"launch_triton.sh passes {missing}, which `tritonserver --help` does not list"


def test_plain_generate_reaches_the_engine_as_the_backend_reads_it(plain_server, stub_pythons, tokenizer):
    prompt = "the cat sat"
    assert _generate(plain_server, {"text_input": prompt, "max_tokens": 5}) == _expected(tokenizer, prompt, 5)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    got = _request_for(plain_server, ids)
    assert got["error"] is None and got["decoupled"] is False
    _assert_stub_ran(got, stub_pythons["plain"])
    inputs = got["inputs"]
    assert inputs["input_ids"] == {"dtype": "int32", "shape": [1, len(ids)], "values": ids}
    assert inputs["input_lengths"] == {"dtype": "int32", "shape": [1], "values": [len(ids)]}
    assert inputs["request_output_len"] == {"dtype": "int32", "shape": [1], "values": [5]}
    assert inputs["end_id"]["values"] == [tokenizer.eos_token_id] and inputs["end_id"]["dtype"] == "int32"
    assert inputs["pad_id"]["values"] == [tokenizer.pad_token_id]
    # Sampling inputs the request did not carry stay absent (the engine's defaults apply).
    assert not {"seed", "temperature", "runtime_top_k", "runtime_top_p", "streaming"} & set(inputs)


def test_sampling_parameters_and_seed_arrive_where_the_backend_reads_them(plain_server, tokenizer):
    prompt, seed = "sampled prompt", 2**40 + 7  # a seed that needs all 8 bytes of the uint64
    body = {"text_input": prompt, "max_tokens": 4, "temperature": 0.5, "top_k": 7, "top_p": 0.9, "seed": seed}
    assert _generate(plain_server, body) == _expected(tokenizer, prompt, 4)
    inputs = _request_for(plain_server, tokenizer.encode(prompt, add_special_tokens=False))["inputs"]
    assert inputs["seed"] == {"dtype": "uint64", "shape": [1], "values": [seed]}
    assert inputs["runtime_top_k"] == {"dtype": "int32", "shape": [1], "values": [7]}
    assert inputs["runtime_top_p"]["dtype"] == "float32" and inputs["runtime_top_p"]["shape"] == [1]
    assert inputs["runtime_top_p"]["values"] == [float(np.float32(0.9))]
    assert inputs["temperature"] == {"dtype": "float32", "shape": [1], "values": [0.5]}


def test_concurrent_requests_each_get_their_own_text(plain_server, tokenizer):
    prompts = [(f"prompt number {i}: " + "xyz"[: i % 3 + 1], 3 + i % 5) for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        texts = list(pool.map(lambda p: _generate(plain_server, {"text_input": p[0], "max_tokens": p[1]}), prompts))
    assert texts == [_expected(tokenizer, prompt, n) for prompt, n in prompts]
    for prompt, n in prompts:
        got = _request_for(plain_server, tokenizer.encode(prompt, add_special_tokens=False))
        assert got["error"] is None and got["inputs"]["request_output_len"]["values"] == [n]


@pytest.mark.parametrize("body,message", [
    ({"text_input": "", "max_tokens": 4}, "text_input is empty (0 tokens)"),
    ({"text_input": "x" * (MAX_INPUT_LEN + 1), "max_tokens": 4},
     f"text_input is {MAX_INPUT_LEN + 1} tokens; the engine takes prompts of at most max_input_len={MAX_INPUT_LEN}"),
    ({"text_input": "fine prompt", "max_tokens": 0}, "max_tokens must be at least 1, got 0"),
    # The backend's old name for the seed: Triton would pass it on as a parameter nothing reads.
    ({"text_input": "fine prompt", "max_tokens": 4, "random_seed": 5},
     "request field(s) 'random_seed' are read by no model of this repository; "
     "its fields are text_input, max_tokens, temperature, top_k, top_p, seed"),
])
def test_bad_requests_get_a_clear_error_from_preprocessing(plain_server, body, message):
    before = len(_received(plain_server))
    status, reply = post(f"{plain_server.url}/v2/models/ensemble/generate", body)
    assert status == 400 and message in reply.get("error", ""), (status, reply)
    assert len(_received(plain_server)) == before  # nothing reached the engine


def test_streaming_sends_one_text_piece_per_token(streaming_server, stub_pythons, tokenizer):
    prompt, n = "stream me", 6
    events = list(post_stream(f"{streaming_server.url}/v2/models/ensemble/generate_stream",
                              {"text_input": prompt, "max_tokens": n, "stream": True, "seed": 3}))
    assert all("error" not in e for e in events), events
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    pieces = [e["text_output"] for e in events]
    assert pieces == [tokenizer.decode([ids[i % len(ids)]]) for i in range(n)]
    got = _request_for(streaming_server, ids)
    assert got["decoupled"] is True and got["error"] is None
    _assert_stub_ran(got, stub_pythons["streaming"])
    assert got["inputs"]["streaming"] == {"dtype": "bool", "shape": [1], "values": [True]}
    assert got["inputs"]["seed"] == {"dtype": "uint64", "shape": [1], "values": [3]}


def test_decoupled_repository_answers_a_plain_request_in_one_piece(streaming_server, tokenizer):
    prompt = "not streamed"
    assert _generate(streaming_server, {"text_input": prompt, "max_tokens": 5}) == _expected(tokenizer, prompt, 5)
    got = _request_for(streaming_server, tokenizer.encode(prompt, add_special_tokens=False))
    assert got["error"] is None and "streaming" not in got["inputs"]
