"""`oea-trt triton-repo`: every config.pbtxt parses as Triton's ModelConfig (tritonclient), the
ensemble chains the models correctly, the launch script preloads the plugin, and our Python
pre/post-processing models round-trip text with a real tokenizer."""
import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from oea_trt.cli import main
from oea_trt.routing.config import OEAConfig
from oea_trt.plan.config_file import engine_config_dict, write_engine_config
from oea_trt.plan.routing_plan import RoutingPlan

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                          reason="needs tritonclient[grpc] (Triton's ModelConfig protobuf)")
from google.protobuf import text_format  # noqa: E402  (comes with tritonclient)

from oea_trt.integrations.triton_server.validate import RepoValidationError, validate_repository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HF_DIR = ROOT / "oea_trt" / "models" / "embedded"  # an HF directory with a tokenizer


@pytest.fixture
def engine_dir(tmp_path):
    """An engine directory as `oea-trt build` leaves it (config.json of TensorRT-LLM + oea_config.json)."""
    d = tmp_path / "engine"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "version": "1.2.1",
        "pretrained_config": {"architecture": "Qwen3MoeForCausalLM", "mapping": {"world_size": 1, "tp_size": 1}},
        "build_config": {"max_batch_size": 32, "max_input_len": 1024, "max_seq_len": 2048, "max_num_tokens": 4096},
    }))
    (d / "rank0.engine").write_bytes(b"")
    plan = RoutingPlan(base=OEAConfig(num_experts=128, top_k=8, k0=3), moe_layers=tuple(range(48)))
    content = engine_config_dict(plan, build={}, model={"hf_dir": str(HF_DIR)})
    content["plugin"]["preload_library"] = "/opt/oea/liboea_routing_trt_preload.so"
    write_engine_config(str(d), content)
    return d


def _parse(path):
    return text_format.Parse(Path(path).read_text(), pb2.ModelConfig())


def _params(cfg):
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_repository_configs_parse_and_point_at_the_engine(engine_dir, tmp_path, capsys):
    out = tmp_path / "triton"
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out)]) == 0
    assert "validated 4 model configs" in capsys.readouterr().out
    repo = out / "model_repository"
    cfgs = {name: _parse(repo / name / "config.pbtxt")
            for name in ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing")}
    trt = cfgs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm" and trt.max_batch_size == 32  # the engine's max_batch_size
    p = _params(trt)
    assert p["gpt_model_path"] == str(engine_dir.resolve())
    assert p["gpt_model_type"] == "inflight_fused_batching"
    assert p["kv_cache_free_gpu_mem_fraction"] == "0.9" and p["exclude_input_in_output"] == "true"
    assert "executor_worker_path" not in p  # single-GPU engine: no orchestrator workers
    assert trt.model_transaction_policy.decoupled is False
    names = {t.name: t for t in trt.input}
    assert names["input_ids"].allow_ragged_batch and names["input_ids"].data_type == pb2.TYPE_INT32
    assert list(names["input_lengths"].reshape.shape) == []
    # The backend reads the seed under `seed` (InputFieldsNames::seed) as a uint64.
    assert "random_seed" not in names and names["seed"].data_type == pb2.TYPE_UINT64
    ens_inputs = {t.name for t in cfgs["ensemble"].input}
    assert {"seed", "temperature", "top_k", "top_p"} <= ens_inputs and "random_seed" not in ens_inputs
    assert cfgs["ensemble"].ensemble_scheduling.step[1].input_map["seed"] == "seed"
    pre = _params(cfgs["preprocessing"])
    assert pre["max_input_len"] == "1024"  # the engine's build_config.max_input_len
    assert pre["request_fields"] == "text_input,max_tokens,temperature,top_k,top_p,seed"
    assert cfgs["ensemble"].platform == "ensemble"
    assert [s.model_name for s in cfgs["ensemble"].ensemble_scheduling.step] == [
        "preprocessing", "tensorrt_llm", "postprocessing"]
    for name in ("preprocessing", "postprocessing"):
        assert cfgs[name].backend == "python"
        assert _params(cfgs[name])["tokenizer_dir"] == str(HF_DIR.resolve())
        assert (repo / name / "1" / "model.py").is_file()
    assert (repo / "tensorrt_llm" / "1").is_dir()
    assert set(validate_repository(str(repo))) == set(cfgs)


def test_streaming_and_multi_gpu(engine_dir, tmp_path):
    cfg = json.loads((engine_dir / "config.json").read_text())
    cfg["pretrained_config"]["mapping"] = {"world_size": 4, "tp_size": 4}
    (engine_dir / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "t"
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out), "--streaming",
                 "--max-batch-size", "8"]) == 0
    repo = out / "model_repository"
    trt = _parse(repo / "tensorrt_llm" / "config.pbtxt")
    assert trt.model_transaction_policy.decoupled is True and trt.max_batch_size == 8
    assert _params(trt)["executor_worker_path"].endswith("trtllmExecutorWorker")
    ens = _parse(repo / "ensemble" / "config.pbtxt")
    assert "stream" in {t.name for t in ens.input}
    assert _params(_parse(repo / "preprocessing" / "config.pbtxt"))["request_fields"].endswith(",seed,stream")
    assert ens.ensemble_scheduling.step[1].input_map["streaming"] == "stream"
    assert "export TRTLLM_ORCHESTRATOR=1" in (out / "launch_triton.sh").read_text()
    validate_repository(str(repo))


def test_validator_catches_a_broken_ensemble(engine_dir, tmp_path):
    out = tmp_path / "t"
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out)]) == 0
    path = out / "model_repository" / "ensemble" / "config.pbtxt"
    text = path.read_text()
    path.write_text(text.replace('key: "input_lengths"', 'key: "input_length"'))
    with pytest.raises(RepoValidationError, match="'input_length' is not an input of the model"):
        validate_repository(str(out / "model_repository"))
    path.write_text(text.replace("TYPE_STRING", "TYPE_STRNG", 1))
    with pytest.raises(RepoValidationError, match="config.pbtxt"):
        validate_repository(str(out / "model_repository"))
    path.write_text(text)
    trt = out / "model_repository" / "tensorrt_llm" / "config.pbtxt"
    trt.write_text(trt.read_text().replace('name: "seed"', 'name: "random_seed"'))
    with pytest.raises(RepoValidationError, match="random_seed are read by no code of the tensorrtllm backend"):
        validate_repository(str(out / "model_repository"))


def _fake_tritonserver(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tritonserver"
    fake.write_text('#!/usr/bin/env bash\necho "LD_PRELOAD=$LD_PRELOAD"\necho "ORCH=${TRTLLM_ORCHESTRATOR:-}"\n'
                    'echo "ARGS=$*"\n')
    fake.chmod(0o755)
    return bin_dir


def test_launch_script_preloads_the_plugin(engine_dir, tmp_path):
    out = tmp_path / "t"
    lib = tmp_path / "liboea_routing_trt_preload.so"
    lib.write_bytes(b"\x7fELF")
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out),
                 "--plugin-library", str(lib), "--http-port", "9000"]) == 0
    script = out / "launch_triton.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = dict(os.environ, PATH=f"{_fake_tritonserver(tmp_path)}:{os.environ['PATH']}", LD_PRELOAD="")
    env.pop("OEA_PLUGIN_LIBRARY", None)
    run = subprocess.run([str(script), "--log-verbose=1"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert f"LD_PRELOAD={lib}" in run.stdout
    assert f"--model-repository={(out / 'model_repository').resolve()}" in run.stdout
    assert "--http-port=9000" in run.stdout and "--log-verbose=1" in run.stdout
    missing = subprocess.run([str(script)], capture_output=True, text=True,
                             env=dict(env, OEA_PLUGIN_LIBRARY=str(tmp_path / "nope.so")))
    assert missing.returncode == 2 and "OEA plugin library not found" in missing.stderr


def test_default_plugin_comes_from_oea_config(engine_dir, tmp_path):
    out = tmp_path / "t"
    assert main(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out)]) == 0
    assert "DEFAULT_PLUGIN=/opt/oea/liboea_routing_trt_preload.so" in (out / "launch_triton.sh").read_text()


def _cli(args):
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("extra,match", [
    (["--kv-cache-free-gpu-mem-fraction", "1.5"], r"must be in \(0, 1\]"),
    (["--max-batch-size", "64"], "must not exceed the engine's max_batch_size=32"),
    (["--http-port", "8001"], "ports must differ"),
    (["--batch-scheduler-policy", "fifo"], "invalid choice"),
])
def test_bad_inputs_exit_2_with_one_line(engine_dir, tmp_path, extra, match, capsys):
    assert _cli(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(tmp_path / "o"),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_not_an_engine_and_non_empty_output(engine_dir, tmp_path, capsys):
    assert _cli(["triton-repo", str(tmp_path), "--tokenizer-dir", str(HF_DIR), "-o", str(tmp_path / "o")]) == 2
    assert "not a TensorRT-LLM engine directory" in capsys.readouterr().err
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert _cli(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _cli(["triton-repo", str(engine_dir), "--tokenizer-dir", str(HF_DIR), "-o", str(out), "--overwrite"]) == 0


# ---- our Python models, run against a stand-in for Triton's python-backend module ------------

class _PbTensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self):
        return self.array


class _Request:
    def __init__(self, tensors, parameters=None):
        self.tensors = {t.name: t for t in tensors}
        self.parameters_json = json.dumps(parameters or {})

    def parameters(self):
        return self.parameters_json


class _TritonError(Exception):
    INVALID_ARG = 3

    def __init__(self, message, code=0):
        super().__init__(message)
        self.text, self.error_code = message, code

    def message(self):
        return self.text


def _response(output_tensors, error=None):
    if error is not None:
        return {"error": error.message(), "code": error.error_code}
    return {t.name: t.array for t in output_tensors}


def _pb_utils():
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = _PbTensor
    m.TritonError = _TritonError
    m.InferenceResponse = _response
    m.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return m


@pytest.fixture
def python_models(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from oea_trt.data import save_hf_tokenizer

    tok_dir = tmp_path / "tok"
    save_hf_tokenizer(str(tok_dir))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    models = {}
    for name in ("preprocessing", "postprocessing"):
        sys.modules.pop(f"oea_trt.integrations.triton_server.python_models.{name}", None)
        module = importlib.import_module(f"oea_trt.integrations.triton_server.python_models.{name}")
        model = module.TritonPythonModel()
        params = {"tokenizer_dir": {"string_value": str(tok_dir)}, "max_input_len": {"string_value": "12"},
                  "request_fields": {"string_value": "text_input,max_tokens,seed"}}
        model.initialize({"model_config": json.dumps({"parameters": params})})
        models[name] = model
    yield models
    for name in ("preprocessing", "postprocessing"):
        sys.modules.pop(f"oea_trt.integrations.triton_server.python_models.{name}", None)


def test_python_models_round_trip_text(python_models):
    pre, post = python_models["preprocessing"], python_models["postprocessing"]
    queries = np.array([[b"hello world"], [b"OEA!"]], dtype=object)
    [out] = pre.execute([_Request([_PbTensor("QUERY", queries), _PbTensor("REQUEST_OUTPUT_LEN", [[7], [7]])])])
    ids, lengths = out["INPUT_ID"], out["REQUEST_INPUT_LEN"]
    assert ids.dtype == np.int32 and ids.shape == (2, 11) and lengths.tolist() == [[11], [4]]
    assert out["OUT_END_ID"].tolist() == [[2], [2]] and out["OUT_PAD_ID"].tolist() == [[0], [0]]
    assert ids[1, 4:].tolist() == [0] * 7  # right-padded with the pad id
    # The engine returns generated tokens only (exclude_input_in_output): [B, beams, L].
    tokens = ids[:, None, :]
    [back] = post.execute([_Request([_PbTensor("TOKENS_BATCH", tokens), _PbTensor("SEQUENCE_LENGTH", lengths)])])
    assert back["OUTPUT"].tolist() == [[b"hello world"], [b"OEA!"]]


def _preprocess(pre, queries, out_len, parameters=None):
    query = _PbTensor("QUERY", np.array([[q] for q in queries], dtype=object))
    [out] = pre.execute([_Request([query, _PbTensor("REQUEST_OUTPUT_LEN", [[out_len]] * len(queries))], parameters)])
    return out


@pytest.mark.parametrize("queries,out_len,parameters,message", [
    ([b""], 4, None, "text_input is empty (0 tokens)"),
    ([b"ok", b""], 4, None, "text_input[1] is empty (0 tokens)"),
    ([b"x" * 13], 4, None, "text_input is 13 tokens; the engine takes prompts of at most max_input_len=12"),
    ([b"fine"], 0, None, "max_tokens must be at least 1, got 0"),
    ([b"fine"], 4, {"random_seed": 5}, "request field(s) 'random_seed' are read by no model of this repository; "
                                       "its fields are text_input, max_tokens, seed"),
])
def test_preprocessing_refuses_what_the_engine_would_misread(python_models, queries, out_len, parameters, message):
    out = _preprocess(python_models["preprocessing"], queries, out_len, parameters)
    assert set(out) == {"error", "code"} and message in out["error"] and out["code"] == _TritonError.INVALID_ARG


def test_preprocessing_takes_the_longest_prompt_and_known_parameters(python_models):
    out = _preprocess(python_models["preprocessing"], [b"x" * 12, "é".encode()], 3,
                      {"request_type": "context_and_generation", "triton_enable_empty_final_response": True})
    assert out["REQUEST_INPUT_LEN"].tolist() == [[12], [1]] and out["INPUT_ID"].shape == (2, 12)
