"""Every command and example against every class of bad input: the exit status, one line on
stderr that names the input, no traceback, no file created or changed, and no expensive work
started (model loading, the sweep, the simulation, the tiny-model writer and the runtime are
replaced by functions that fail the test if they run)."""
import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from oea_trt.cli import main as cli_main  # noqa: E402
from oea_trt.models.random_model import save_tiny_model  # noqa: E402
from oea_trt.plan.config_file import engine_config_dict, write_engine_config  # noqa: E402
from oea_trt.plan.routing_plan import RoutingPlan  # noqa: E402
from oea_trt.routing.config import OEAConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
Q30 = str(ROOT / "tests" / "data" / "qwen3-30b-a3b")
HAS_CUDA = torch.cuda.is_available()
HAS_TRTLLM = importlib.util.find_spec("tensorrt_llm") is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLES = {name: load_example(name) for name in ("generate", "pytorch_backend_llm")}


def edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A workspace of good and broken inputs; {name: path} for the argv templates below."""
    ws = tmp_path_factory.mktemp("workspace")
    tiny = Path(save_tiny_model(str(ws / "tiny"), num_experts=16, top_k=4))
    bad = {}

    def broken(name):
        shutil.copytree(tiny, ws / name)
        bad[name] = ws / name
        return ws / name

    weights = broken("trunc") / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)
    noweights = ws / "noweights"
    noweights.mkdir()
    shutil.copy(tiny / "config.json", noweights)
    bad["noweights"] = noweights
    (broken("listcfg") / "config.json").write_text("[1, 2]")
    (broken("badjson") / "config.json").write_text('{"num_experts": ')
    edit_config(broken("many"), num_experts="many", num_local_experts="many")
    edit_config(broken("llama"), model_type="llama", architectures=["LlamaForCausalLM"])
    edit_config(broken("layers"), num_hidden_layers=4)
    edit_config(broken("experts"), num_experts=32, num_local_experts=32)
    for f in broken("notok").glob("tokenizer*"):
        f.unlink()

    engine = ws / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({
        "pretrained_config": {"architecture": "Qwen3MoeForCausalLM", "mapping": {"world_size": 1}},
        "build_config": {"max_batch_size": 32}}))
    (engine / "rank0.engine").write_bytes(b"")
    plan = RoutingPlan(base=OEAConfig(num_experts=16, top_k=4, k0=3), moe_layers=(0, 1))
    write_engine_config(str(engine), engine_config_dict(plan, build={}, model={"hf_dir": str(tiny)}))
    unbuilt = ws / "unbuilt"
    shutil.copytree(engine, unbuilt)
    (unbuilt / "rank0.engine").unlink()

    results = ws / "results"
    results.mkdir()
    (results / "eval_results.json").write_text("{}\n")
    nonempty = ws / "nonempty"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("keep")
    readonly = ws / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    (ws / "file.txt").write_text("a file\n")
    layer_k0 = {"float": {"0": 5.9}, "bool": {"0": True}, "str": {"0": "three"}, "key": {"x": 3},
                "list": [1], "empty": {}}
    for name, content in layer_k0.items():
        (ws / f"lk_{name}.json").write_text(json.dumps(content))
    (ws / "lk_badjson.json").write_text('{"0": 3,')
    q30_plan = RoutingPlan(base=OEAConfig(num_experts=128, top_k=8, k0=3), moe_layers=tuple(range(48)))
    routing_configs = {"float": ("layer_k0", {"1": 3.5}), "bool": ("moe_layers", [0, True]),
                       "fill": ("base", {**q30_plan.base.to_dict(), "fill": "top1"}),
                       "nobase": ("base", {"k0": 3})}
    for name, (key, value) in routing_configs.items():
        content = engine_config_dict(q30_plan, build={}, model={})
        content["routing"][key] = value
        (ws / f"rc_{name}.json").write_text(json.dumps(content))
    paths = {"ws": ws, "tiny": tiny, "engine": engine, "unbuilt": unbuilt, "results": results,
             "nonempty": nonempty, "readonly": readonly, "file": ws / "file.txt", "q30": Q30, **bad}
    return {k: str(v) for k, v in paths.items()}


def snapshot(root):
    """{relative path: (mode, sha256)} of everything under root (directories included)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            digest = ""
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            state[os.path.relpath(path, root)] = (os.stat(path).st_mode, digest)
    return state


def must_not_run(what):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} started before the bad input was reported")

    return refuse


@pytest.fixture
def no_expensive_work(monkeypatch):
    import oea_trt.cli.commands.simulate as simulate_command
    import oea_trt.eval as eval_package

    for name in ("load_model", "evaluate", "dump_traces"):
        monkeypatch.setattr(eval_package, name, must_not_run(f"oea_trt.eval.{name}"))
    monkeypatch.setattr(simulate_command, "simulate", must_not_run("the simulation"))
    monkeypatch.setattr(EXAMPLES["generate"], "open_runtime", must_not_run("the runtime"))
    monkeypatch.setattr(EXAMPLES["generate"], "save_tiny", must_not_run("writing the tiny model"))
    import oea_trt.runtime as runtime_package  # `oea-trt generate` imports open_runtime from it when it runs

    monkeypatch.setattr(runtime_package, "open_runtime", must_not_run("the runtime"))


def invoke(command, argv):
    entry = cli_main if command == "oea-trt" else EXAMPLES[command].main
    try:
        return entry(argv)
    except SystemExit as exc:  # argparse's errors
        return exc.code


EVAL = ["eval", "--quiet", "--output-dir", "{ws}/eval-out"]
EVAL_TINY = EVAL + ["--model", "{tiny}"]
SIM = ["simulate", "--trials", "2", "--batch", "4"]
BUILD = ["build", "{q30}", "-o", "{ws}/built", "--dry-run"]
TRITON = ["triton-repo", "{engine}", "--tokenizer-dir", "{tiny}", "-o", "{ws}/triton-out"]
GEN = ["{tiny}", "--device", "cpu"]
skip_root = pytest.mark.skipif(IS_ROOT, reason="root writes into read-only directories")
skip_cuda = pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
skip_trtllm = pytest.mark.skipif(HAS_TRTLLM, reason="TensorRT-LLM is installed")

# Broken model directories, with what each must be reported as (every front end that loads a model).
MODEL_DIRS = [
    ("{ws}/missing", "does not exist"),
    ("{file}", "is a file"),
    ("{nonempty}", "has no config.json"),
    ("{listcfg}", r"must hold an object .*got list"),
    ("{badjson}", "is not valid JSON"),
    ("{many}", "num_experts must be a positive integer, got 'many'"),
    ("{llama}", "is not Qwen3-MoE"),
    ("{trunc}", "model.safetensors is truncated"),
    ("{noweights}", "has config.json but no weights"),
    ("{layers}", "no router for layer 2; config.json and the weights do not match"),
    ("{experts}", r"router weight is \[16, 32\].*do not match"),
    ("{notok}", "has no tokenizer"),
]
CONFIG_ONLY = ("{ws}/missing", "{file}", "{nonempty}", "{listcfg}", "{badjson}", "{many}", "{llama}")

CASES = [
    # -- eval: output paths ----------------------------------------------------------------
    ("oea-trt", EVAL + ["--output-dir", "{file}"], 2, r"--output-dir .*file\.txt is a file"),
    ("oea-trt", EVAL + ["--output-dir", "{results}"], 2, "already holds eval_results.json; pass --overwrite"),
    pytest.param("oea-trt", EVAL + ["--output-dir", "{readonly}/out"], 2, "is not writable", marks=skip_root),
    ("oea-trt", EVAL + ["--dump-traces", "{ws}"], 2, "--dump-traces .* is a directory"),
    ("oea-trt", EVAL + ["--dump-traces", "{ws}/nope/t.pt"], 2, r"directory .*nope does not exist"),
    ("oea-trt", EVAL + ["--dump-traces", "{file}"], 2, "--dump-traces .* already exists; pass --overwrite"),
    ("oea-trt", EVAL + ["--dump-traces", "{ws}/eval-out/eval_results.json"], 2, "is one of the result files"),
    # -- eval: numbers and sizes -----------------------------------------------------------
    ("oea-trt", EVAL_TINY + ["--length", "300"], 2, "--length must be at most the model's max_position_embeddings=256"),
    ("oea-trt", EVAL_TINY + ["--k0", "5"], 2, r"--k0 values must be in \[1, top_k=4\], got 5"),
    ("oea-trt", EVAL_TINY + ["--max-rank", "17"], 2, r"max_rank must be an integer in \[1, num_experts=16\]"),
    ("oea-trt", EVAL + ["--k0", "2.5"], 2, "argument --k0: expected a positive integer, got '2.5'"),
    ("oea-trt", EVAL + ["--k0", "true"], 2, "argument --k0: expected a positive integer, got 'true'"),
    ("oea-trt", EVAL + ["--seed", "1.5"], 2, "argument --seed: expected an integer"),
    ("oea-trt", EVAL + ["--length", "1"], 2, "--length must be at least 2"),
    ("oea-trt", EVAL + ["--sequences", "10", "--batch", "4"], 2, "--sequences must be a multiple"),
    ("oea-trt", EVAL + ["--domains", "poetry"], 2, "--domains: unknown domain"),
    ("oea-trt", EVAL + ["--device", "tpu"], 2, r"--device must be auto, cpu or cuda\[:N\]"),
    ("oea-trt", EVAL + ["--threads", "100000"], 2, "--threads must be at most the .* CPU cores"),
    ("oea-trt", EVAL + ["--model", "{engine}"], 2,
     r"is a TensorRT-LLM engine directory; pass the Hugging Face directory it was built from \(.*tiny\)"),
    pytest.param("oea-trt", EVAL + ["--device", "cuda"], 2, "torch sees no CUDA GPU", marks=skip_cuda),
    ("oea-trt", EVAL_TINY + ["--batch", "1000000000", "--sequences", "1000000000"], 2,
     r"needs about .*B of memory, .* is available; use fewer --sequences"),
    # -- simulate --------------------------------------------------------------------------
    ("oea-trt", SIM + ["--json", "{ws}"], 2, "--json .* is a directory"),
    ("oea-trt", SIM + ["--json", "{ws}/nope/sim.json"], 2, r"directory .*nope does not exist"),
    ("oea-trt", SIM + ["--json", "{file}"], 2, "--json .* already exists; pass --overwrite"),
    pytest.param("oea-trt", SIM + ["--json", "{readonly}/sim.json"], 2, "is not writable", marks=skip_root),
    ("oea-trt", SIM + ["--batch", "1000000000"], 2,
     r"--batch 1000000000 with --trials 2 needs about .* of memory.*use --batch values up to about \d+"),
    ("oea-trt", SIM + ["--seed", "-1"], 2, r"--seed must be in \[0, 4294967295\], got -1"),
    ("oea-trt", SIM + ["--k0", "9"], 2, r"--k0 values must be in \[1, top_k=8\], got 9"),
    ("oea-trt", SIM + ["--bandwidth", "nan"], 2, "argument --bandwidth: expected a positive number"),
    ("oea-trt", SIM + ["--trials", "1.0"], 2, "argument --trials: expected a positive integer"),
    # -- build ------------------------------------------------------------------------------
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_float.json"], 2, r"k0 of layer 0 must be a positive integer, got 5\.9"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_bool.json"], 2, r"k0 of layer 0 must be a positive integer, got True \(bool\)"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_str.json"], 2, r"k0 of layer 0 must be a positive integer, got 'three'"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_key.json"], 2, "layer key must be an integer >= 0, got 'x'"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_list.json"], 2, r"lk_list\.json must hold an object"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_empty.json"], 2, r"lk_empty\.json names no layer"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_badjson.json"], 2, r"lk_badjson\.json is not valid JSON"),
    ("oea-trt", BUILD + ["--layer-k0", "{ws}/lk_missing.json"], 2, r"lk_missing\.json does not exist"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/missing.json"], 2, r"--routing-config .*missing\.json does not exist"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/lk_badjson.json"], 2, r"lk_badjson\.json is not valid JSON"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/lk_list.json"], 2, r"lk_list\.json must hold an object"),
    ("oea-trt", BUILD + ["--routing-config", "{results}/eval_results.json"], 2,
     "has no \"format\", expected format 'oea-trt/engine-config/1'"),
    ("oea-trt", BUILD + ["--routing-config", "{nonempty}"], 2, "is a directory without oea_config.json"),
    ("oea-trt", BUILD + ["--routing-config", "{engine}"], 2,
     "does not fit .*: num_experts is 16 in the plan, 128 in the model; top_k is 4 in the plan, 8 in the model"),
    ("oea-trt", BUILD + ["--routing-config", "{engine}", "--k0", "3"], 2,
     "--routing-config sets the whole routing plan; drop --k0"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/rc_float.json"], 2, "k0 of layer 1 must be an integer, got 3.5"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/rc_bool.json"], 2,
     r"moe_layers must be a list of layer numbers >= 0, got \[0, True\]"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/rc_fill.json"], 2, "fill is 'top1', engines need 'invalid'"),
    ("oea-trt", BUILD + ["--routing-config", "{ws}/rc_nobase.json"], 2, "base has no num_experts, top_k"),
    ("oea-trt", BUILD + ["--top-p", "0"], 2, r"argument --top-p: expected a number in \(0, 1\]"),
    ("oea-trt", BUILD + ["--k0", "9"], 2, r"k0 must be an integer in \[1, k_max=8\], got 9"),
    ("oea-trt", BUILD + ["--tp-size", "2.0"], 2, "argument --tp-size: expected a positive integer"),
    ("oea-trt", BUILD + ["-o", "{file}"], 2, "--output-dir .* is a file"),
    ("oea-trt", BUILD + ["--checkpoint-dir", "{file}"], 2, "--checkpoint-dir .* is a file"),
    ("oea-trt", BUILD + ["--checkpoint-dir", "{ws}/built"], 2, "--checkpoint-dir must differ from --output-dir"),
    ("oea-trt", BUILD + ["--plugin-library", "{ws}/nope.so"], 2, "--plugin-library .* does not exist"),
    ("oea-trt", ["build", "{tiny}", "-o", "{nonempty}"], 2, "--output-dir .* is not empty; pass --overwrite"),
    ("oea-trt", ["build", "{tiny}", "-o", "{ws}/built", "--checkpoint-dir", "{nonempty}"], 2,
     "--checkpoint-dir .* is not empty; pass --overwrite"),
    pytest.param("oea-trt", ["build", "{tiny}", "-o", "{ws}/built"], 2, "TensorRT-LLM is not importable",
                 marks=skip_trtllm),
    # -- bench (its inputs beyond these are the bench command's own tests) -------------------
    ("oea-trt", ["bench"], 2, "name a benchmark: oea-trt bench moe"),
    ("oea-trt", ["bench", "moe", "--batch", "0"], 2, "argument --batch: expected a positive integer, got '0'"),
    ("oea-trt", ["bench", "moe", "--trace", "{ws}/nope.pt"], 2, r"trace file .*nope\.pt does not exist"),
    # -- triton-repo -------------------------------------------------------------------------
    ("oea-trt", ["triton-repo", "{tiny}"] + TRITON[2:], 2, "is a Hugging Face model directory, not an engine"),
    ("oea-trt", ["triton-repo", "{ws}/missing"] + TRITON[2:], 2, "ENGINE_DIR .* does not exist"),
    ("oea-trt", ["triton-repo", "{unbuilt}"] + TRITON[2:], 2, r"has no \*\.engine file"),
    ("oea-trt", TRITON + ["--tokenizer-dir", "{noweights}"], 2, "--tokenizer-dir .* has no tokenizer"),
    ("oea-trt", TRITON + ["--tokenizer-dir", "{ws}/missing"], 2, "--tokenizer-dir .* does not exist"),
    ("oea-trt", TRITON + ["-o", "{file}"], 2, "--output-dir .* is a file"),
    ("oea-trt", TRITON + ["-o", "{nonempty}"], 2, "is not empty; pass --overwrite"),
    ("oea-trt", TRITON + ["--http-port", "70000"], 2, r"expected a port number in \[1, 65535\]"),
    ("oea-trt", TRITON + ["--http-port", "8001"], 2, "ports must differ"),
    ("oea-trt", TRITON + ["--kv-cache-free-gpu-mem-fraction", "1.5"], 2, r"must be in \(0, 1\]"),
    ("oea-trt", TRITON + ["--max-batch-size", "64"], 2, "must not exceed the engine's max_batch_size=32"),
    # -- examples/generate.py ----------------------------------------------------------------
    ("generate", [], 2, "give a model/engine PATH or --tiny DIR"),
    ("generate", GEN + ["--tiny", "{ws}/t"], 2, "not both"),
    ("generate", GEN + ["--k0", "0"], 2, "argument --k0: expected a positive integer, got '0'"),
    ("generate", GEN + ["--k0", "9"], 2, r"--k0 must be in \[1, top_k=4\] for this model, got 9"),
    ("generate", GEN + ["--max-new-tokens", "0"], 2, "argument --max-new-tokens: expected a positive integer"),
    ("generate", GEN + ["--max-new-tokens", "1000"], 2, "below the model's max_position_embeddings=256"),
    ("generate", GEN + ["--temperature", "-1"], 2, "argument --temperature: expected a number >= 0"),
    ("generate", GEN + ["--device", "tpu"], 2, r"--device must be auto, cpu or cuda\[:N\]"),
    pytest.param("generate", ["{tiny}", "--device", "cuda"], 2, "torch sees no CUDA GPU", marks=skip_cuda),
    ("generate", GEN + ["--prompt", "hi", "--prompt", ""], 2, "--prompt number 2 is empty"),
    ("generate", GEN + ["--json", "{ws}"], 2, "--json .* is a directory"),
    ("generate", GEN + ["--json", "{file}"], 2, "--json .* already exists"),
    ("generate", ["--tiny", "{tiny}"], 2, "--tiny .* is not empty; give a new directory, pass --overwrite"),
    ("generate", ["--tiny", "{file}"], 2, "--tiny .* is a file"),
    pytest.param("generate", GEN + ["--backend", "tensorrt-llm"], 2, "--backend tensorrt-llm needs TensorRT-LLM",
                 marks=skip_trtllm),
    # -- oea-trt generate -----------------------------------------------------------------------
    ("oea-trt", ["generate", "{ws}/missing", "--device", "cpu"], 2, "MODEL_DIR .*missing does not exist"),
    ("oea-trt", ["generate", "{tiny}", "--device", "cpu", "--prompt", ""], 2, "--prompt number 1 is empty"),
    ("oea-trt", ["generate", "{tiny}", "--device", "cpu", "--k0", "9"], 2, r"--k0 must be in \[1, top_k=4\]"),
    ("oea-trt", ["generate", "{tiny}", "--device", "cpu", "--max-new-tokens", "1000"], 2,
     "below the model's max_position_embeddings"),
    ("oea-trt", ["generate", "{tiny}", "--device", "cpu", "--json", "{ws}"], 2, "--json .* is a directory"),
    ("oea-trt", ["generate", "{tiny}", "--device", "cpu", "--json", "{file}"], 2, "--json .* already exists"),
    ("oea-trt", ["generate", "{tiny}", "--top-p", "0"], 2, r"argument --top-p: expected a number in \(0, 1\]"),
    ("oea-trt", ["generate", "{tiny}", "--device", "tpu"], 2, r"--device must be auto, cpu or cuda\[:N\]"),
    pytest.param("oea-trt", ["generate", "{tiny}", "--device", "cuda"], 2, "torch sees no CUDA GPU",
                 marks=skip_cuda),
    # -- oea-trt advise -------------------------------------------------------------------------
    ("oea-trt", ["advise", "{ws}/missing.json"], 2, "eval results .*missing.json does not exist"),
    ("oea-trt", ["advise", "{file}"], 2, "is not valid JSON"),
    ("oea-trt", ["advise", "{file}", "--budget", "-1"], 2, "argument --budget: expected a number >= 0"),
    ("oea-trt", ["advise", "{file}", "-o", "{file}"], 2, "--output-dir .*file.txt is a file"),
    # -- examples/pytorch_backend_llm.py -----------------------------------------------------
    ("pytorch_backend_llm", ["{tiny}", "--k0", "0"], 2, "argument --k0: expected a positive integer"),
    ("pytorch_backend_llm", ["{tiny}", "--k0", "9"], 2, r"--k0 must be in \[1, top_k=4\]"),
    pytest.param("pytorch_backend_llm", ["{tiny}"], 2, "this example needs TensorRT-LLM 1.2.1", marks=skip_trtllm),
]
for path, message in MODEL_DIRS:
    CASES.append(("oea-trt", EVAL + ["--model", path], 2, message))
    CASES.append(("generate", [path, "--device", "cpu"], 2, message))
    CASES.append(("oea-trt", ["generate", path, "--device", "cpu"], 2, message))
    if path in CONFIG_ONLY:
        CASES.append(("oea-trt", ["build", path, "-o", "{ws}/built", "--dry-run"], 2, message))
        CASES.append(("pytorch_backend_llm", [path], 2, message))


def case_id(case):
    values = case.values if hasattr(case, "values") else case
    argv = " ".join(values[1]).replace("--quiet --output-dir {ws}/eval-out ", "")
    return f"{values[0]}:{argv}"[:100]


@pytest.mark.parametrize("command, argv, status, message", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(command, argv, status, message, inputs, no_expensive_work,
                                                   capsys, monkeypatch):
    monkeypatch.chdir(inputs["ws"])  # a default output path would land in the snapshot too
    before = snapshot(inputs["ws"])
    capsys.readouterr()
    rc = invoke(command, [a.format(**inputs) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "internal error" not in err, err
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(inputs["ws"]) == before


def test_every_command_and_example_is_covered():
    from oea_trt.cli import command_modules

    def values(case):
        return case.values if hasattr(case, "values") else case

    covered = {values(c)[1][0] for c in CASES if values(c)[0] == "oea-trt"}
    assert {values(c)[0] for c in CASES} == {"oea-trt", *EXAMPLES}
    assert {m.NAME for m in command_modules()} <= covered
