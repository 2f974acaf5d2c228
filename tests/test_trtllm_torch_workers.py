"""OEA in TensorRT-LLM's executor workers, started the way TensorRT-LLM starts them: a parent
process imports the OEA backend and builds the LLM arguments; the worker is a fresh interpreter
that unpickles worker_main with its arguments (GenerationExecutorProxy's submit; MpiPoolSession
forwards only TRTLLM*/TLLM* environment variables and sys.path) and builds the model from them.
TensorRT-LLM itself is the stand-in in tests/trtllm_double (its README says what it reproduces);
oea_trt's backend module is the real one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # spawns a parent and eight workers (each imports torch and transformers)

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = Path(__file__).resolve().parent / "trtllm_double"

WORKER = r"""
import json, pickle, sys, torch
fn, kwargs = pickle.loads(sys.stdin.buffer.read())
try:
    model = fn(**kwargs)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
layers = []
for layer in model.model.layers:
    experts = layer.mlp.experts
    method, backend = experts.routing_method, getattr(experts, "backend", experts)
    config = getattr(method, "config", None)
    layers.append({"routing": type(method).__name__, "backend_routing": type(backend.routing_method).__name__,
                   "k0": config and config.k0, "fill": config and config.fill})
try:
    model(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), attn_metadata=None)
    forward = "ok"
except Exception as exc:
    forward = f"{type(exc).__name__}: {exc}"
print(json.dumps({"model": f"{type(model).__module__}.{type(model).__qualname__}", "layers": layers,
                  "forward": forward, "env": sorted(k for k in __import__("os").environ if k.startswith("OEA"))}))
"""

PARENT = r"""
import json, os, pickle, subprocess, sys
from transformers import Qwen3MoeConfig
from oea_trt.integrations.trtllm_torch import backend
from tensorrt_llm._torch.models.modeling_utils import MODEL_CLASS_MAPPING
from tensorrt_llm.executor.worker import worker_main
from tensorrt_llm.llmapi.llm_args import TorchLlmArgs

WORKER = sys.argv[1]
results = {}
for name, case in json.loads(sys.argv[2]).items():
    config = Qwen3MoeConfig(hidden_size=16, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1, num_experts=8, num_experts_per_tok=2,
                            norm_topk_prob=True, mlp_only_layers=case.get("mlp_only_layers", []),
                            architectures=["Qwen3MoeForCausalLM"])
    settings = case.get("settings")
    model_kwargs = None if settings is None else backend.llm_kwargs(**settings)["model_kwargs"]
    llm_args = TorchLlmArgs(model="tiny", model_kwargs=model_kwargs, **case.get("llm_args", {}))
    kwargs = dict(pretrained_config=config, llm_args=llm_args)
    if case.get("forward_mapping", True):
        kwargs["_torch_model_class_mapping"] = MODEL_CLASS_MAPPING  # as GenerationExecutorProxy passes it
    env = {k: v for k, v in os.environ.items() if k.startswith(("TRTLLM", "TLLM"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # MPIPoolExecutor(path=sys.path)
    env.update(case.get("worker_env", {}))
    done = subprocess.run([sys.executable, "-c", WORKER], input=pickle.dumps((worker_main, kwargs)),
                          capture_output=True, env=env)
    out = done.stdout.decode().strip().splitlines()
    results[name] = json.loads(out[-1]) if done.returncode == 0 and out else {"crash": done.stderr.decode()[-2000:]}
print(json.dumps(results))
"""

CASES = {
    "llm_kwargs": {"settings": {"k0": 1, "layer_k0": {2: 2}}},
    "no_class_mapping": {"settings": {"k0": 1}, "forward_mapping": False},
    "no_settings": {"settings": None},
    "trtllm_gen_in_configurable_moe": {"settings": {"k0": 1}, "llm_args": {"moe_backend": "TRTLLM"}},
    "trtllm_gen_bare": {"settings": {"k0": 1}, "llm_args": {"moe_backend": "TRTLLM"},
                        "worker_env": {"ENABLE_CONFIGURABLE_MOE": "0"}},
    "trtllm_gen_attention_dp": {"settings": {"k0": 1}, "llm_args": {"moe_backend": "TRTLLM", "enable_attention_dp": True}},
    "expert_parallel": {"settings": {"k0": 1}, "llm_args": {"moe_expert_parallel_size": 4}},
    "mlp_only_layers": {"settings": {"k0": 1, "layer_k0": {0: 2}}, "mlp_only_layers": [0]},
}
OEA_MODEL = "oea_trt.integrations.trtllm_torch.backend.OEAQwen3MoeForCausalLM"


@pytest.fixture(scope="module")
def workers():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OEA")}
    env["PYTHONPATH"] = os.pathsep.join([str(DOUBLE), str(ROOT)])
    done = subprocess.run([sys.executable, "-c", PARENT, WORKER, json.dumps(CASES)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _oea_layers(result):
    assert "error" not in result and "crash" not in result, result
    assert result["model"] == OEA_MODEL and result["forward"] == "ok", result
    for layer in result["layers"]:
        assert layer["routing"] == layer["backend_routing"] == "OEAMoeRoutingMethod", layer
    return result["layers"]


def test_settings_reach_the_worker_inside_the_llm_arguments(workers):
    layers = _oea_layers(workers["llm_kwargs"])
    assert [layer["k0"] for layer in layers] == [1, 1, 2]
    assert {layer["fill"] for layer in layers} == {"num_experts"}
    assert workers["llm_kwargs"]["env"] == []  # nothing travelled in the environment


def test_the_settings_register_the_model_where_the_class_mapping_is_not_forwarded(workers):
    assert [layer["k0"] for layer in _oea_layers(workers["no_class_mapping"])] == [1, 1, 1]


def test_a_worker_without_settings_refuses_to_build(workers):
    error = workers["no_settings"]["error"]
    assert error.startswith("SettingsMissing") and "llm_kwargs(k0=" in error


@pytest.mark.parametrize("case", ["trtllm_gen_in_configurable_moe", "trtllm_gen_bare"])
def test_fused_routing_backends_refuse_instead_of_routing_vanilla(workers, case):
    error = workers[case]["error"]
    assert "TRTLLMGenFusedMoE" in error and "never calls routing_method.apply()" in error


def test_separated_trtllm_gen_routing_takes_real_ids(workers):
    assert {layer["fill"] for layer in _oea_layers(workers["trtllm_gen_attention_dp"])} == {"top1"}


def test_expert_parallel_layers_fill_with_real_experts(workers):
    assert {layer["fill"] for layer in _oea_layers(workers["expert_parallel"])} == {"top1"}


def test_every_layer_tensorrt_llm_built_as_moe_gets_oea(workers):
    """TensorRT-LLM builds Qwen3MoE even in mlp_only_layers; the plan follows the built model."""
    assert [layer["k0"] for layer in _oea_layers(workers["mlp_only_layers"])] == [2, 1, 1]
