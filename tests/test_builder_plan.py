"""The engine build plan and `oea-trt build --dry-run` (no TensorRT-LLM needed)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from oea_trt.cli import main
from oea_trt.integrations.trtllm.build_plan import (MODEL_CLS_FILE, MODEL_CLS_NAME, BuildOptions, BuildPlanError, make_plan,
                                       trtllm_build_command)

ROOT = Path(__file__).resolve().parent.parent
Q30 = str(ROOT / "tests" / "data" / "qwen3-30b-a3b")
Q235 = str(ROOT / "tests" / "data" / "qwen3-235b-a22b")


def _plan(**kw):
    kw.setdefault("hf_dir", Q30)
    kw.setdefault("output_dir", "/tmp/oea-engine")
    return make_plan(BuildOptions(**kw))


def test_dry_run_plan_qwen3_30b_a3b():
    plan = _plan(k0=3)
    s = plan.spec
    assert len(s.moe_layers) == 48 and s.num_experts == 128 and s.top_k == 8
    assert (s.hidden_size, s.moe_intermediate_size) == (2048, 768)
    assert plan.dtype == "bfloat16"
    assert plan.routing.base.renormalize is True            # HF norm_topk_prob=true
    assert plan.routing.base.fill == "invalid"              # the MoE plugin skips -1
    assert plan.routing.k0_by_layer() == {i: 3 for i in range(48)}
    assert plan.experts.expert_bytes == 3 * 2048 * 768 * 2 == 9_437_184
    assert plan.experts.shapes()["mlp.fc.weight (up|gate)"] == (128, 1536, 2048)
    assert plan.experts.shapes()["mlp.proj.weight (down)"] == (128, 2048, 768)
    text = plan.format()
    for needle in ("48 MoE layers (0-47)", "128 experts, top-8, moe_intermediate 768", "hidden 2048",
                   "norm_topk_prob=true -> renormalize=true", "9.44 MB per expert", "k0=3 in all 48 MoE layers"):
        assert needle in text, needle
    assert [st.name for st in plan.steps] == ["convert", "patch checkpoint config", "build engine",
                                             "write oea_config.json"]


def test_trtllm_build_command_uses_our_model_class_and_packed_inputs():
    cmd = trtllm_build_command(_plan(max_batch_size=16, max_num_tokens=2048, workers=2,
                                     extra_build_args=("--multiple_profiles", "enable")))
    assert cmd[0] == "trtllm-build"
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert flags["--model_cls_file"] == str(MODEL_CLS_FILE) and MODEL_CLS_FILE.is_file()
    assert flags["--model_cls_name"] == MODEL_CLS_NAME
    assert flags["--checkpoint_dir"] == "/tmp/oea-engine.ckpt"
    assert flags["--max_batch_size"] == "16" and flags["--max_num_tokens"] == "2048" and flags["--workers"] == "2"
    # The decode/context split needs host_request_types / host_context_lengths.
    assert flags["--gpt_attention_plugin"] == "auto" and flags["--remove_input_padding"] == "enable"
    assert cmd[-2:] == ["--multiple_profiles", "enable"]
    assert MODEL_CLS_NAME in MODEL_CLS_FILE.read_text()


def test_235b_tp8_ep2_shards_experts_and_intermediate():
    plan = _plan(hf_dir=Q235, tp_size=8, ep_size=2, layer_k0={0: 8, 93: 5})
    e = plan.experts
    assert (plan.moe_tp_size, plan.moe_ep_size) == (4, 2)
    assert (e.experts_per_rank, e.intermediate_per_rank) == (64, 384)
    assert e.expert_bytes == 3 * 4096 * 1536 * 2
    assert e.layer_bytes_per_rank == 64 * 3 * 4096 * 384 * 2
    assert plan.routing.k0_by_layer()[0] == 8 and plan.routing.k0_by_layer()[93] == 5
    assert "Mapping(world_size=8, rank=rank, tp_size=8, pp_size=1, moe_tp_size=4, moe_ep_size=2)" in plan.format()


def test_renormalize_follows_norm_topk_prob(tmp_path):
    cfg = (Path(Q30) / "config.json").read_text().replace('"norm_topk_prob": true', '"norm_topk_prob": false')
    (tmp_path / "config.json").write_text(cfg)
    plan = _plan(hf_dir=str(tmp_path))
    assert plan.routing.base.renormalize is False
    assert "NONE (0)" in plan.steps[1].what


@pytest.mark.parametrize("kw,match", [
    (dict(tp_size=4, ep_size=3), "ep-size must divide tp-size"),
    (dict(tp_size=6, ep_size=1), "must divide num_attention_heads=32"),
    (dict(dtype="int8"), "dtype must be one of auto"),
    (dict(k0=0), r"k0 must be an integer in \[1, k_max=8\]"),
    (dict(k_max=9), "k-max must equal the model's top_k=8"),
    (dict(max_input_len=50000), "must not exceed max-seq-len=40960"),
    (dict(tp_size=0), "tp-size must be a positive integer"),
])
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        _plan(**kw)


def test_dense_layers_are_refused(tmp_path):
    cfg = (Path(Q30) / "config.json").read_text().replace('"mlp_only_layers": []', '"mlp_only_layers": [0, 1]')
    (tmp_path / "config.json").write_text(cfg)
    with pytest.raises(BuildPlanError, match="layers 0-1 are dense"):
        _plan(hf_dir=str(tmp_path))


def test_cli_dry_run_prints_plan(capsys):
    assert main(["build", Q30, "-o", "/tmp/x", "--dry-run", "--layer-k0", "0-1:8", "--k0-schedule", "8:4"]) == 0
    out = capsys.readouterr().out
    assert "k0=3 in layers 2-47; k0=8 in layers 0-1" in out
    assert "k0_schedule=8:4" in out
    assert "trtllm-build --checkpoint_dir /tmp/x.ckpt" in out


def _cli(args):
    """Exit status of `oea-trt ARGS` (argparse errors exit through SystemExit)."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args,match", [
    (["--k0", "9"], r"k0 must be an integer in \[1, k_max=8\], got 9"),
    (["--layer-k0", "0-60:3"], "48-60 that are not MoE layers"),
    (["--k0-schedule", "8-4"], "MIN_DECODE_TOKENS:K0"),
    (["--tp-size", "0"], "expected a positive integer"),
    (["--dtype", "int4"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_exit_2(args, match, capsys):
    assert _cli(["build", Q30, "-o", "/tmp/x", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(match, err), err


def test_cli_without_tensorrt_llm_says_where_to_run(capsys):
    if _has("tensorrt_llm"):
        pytest.skip("TensorRT-LLM is installed here: the real build would start")
    assert main(["build", Q30, "-o", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT-LLM is not importable" in err and "--dry-run" in err


def _has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_builder_script_is_the_same_implementation():
    cli = subprocess.run([sys.executable, "-m", "oea_trt.cli", "build", Q30, "-o", "/tmp/y", "--dry-run"],
                         capture_output=True, text=True, cwd=ROOT)
    script = subprocess.run([sys.executable, "builder/build_qwen3_moe_oea.py", Q30, "-o", "/tmp/y", "--dry-run"],
                            capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == script.returncode == 0, cli.stderr + script.stderr
    assert cli.stdout == script.stdout and "48 MoE layers" in cli.stdout
    bad = subprocess.run([sys.executable, "builder/build_qwen3_moe_oea.py", Q30, "-o", "/tmp/y", "--ep-size", "3",
                          "--tp-size", "2", "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# -- --routing-config: the whole plan from an oea_config.json ----------------------------------
ADVICE_DIR = ROOT / "benchmarks" / "results" / "advise" / "b16"
EMBEDDED = "oea_trt/models/embedded"


def _routing_of(argv):
    """The routing plan `oea-trt build ARGV` resolves (parsed exactly as the command line is)."""
    from oea_trt.cli import build_parser
    from oea_trt.cli.commands.build import options_from_args

    return make_plan(options_from_args(build_parser().parse_args(["build", *argv, "--dry-run"]))).routing


def _dry_run(argv, capsys):
    assert main(["build", *argv, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_advisors_config_builds_the_advised_plan(tmp_path, capsys, monkeypatch):
    """The committed advice: its oea_config.json gives the plan (and the printed dry run) that its
    build flags give, and that plan routes each batch size with the advised k0 per layer."""
    monkeypatch.chdir(ROOT)  # the advised flags name layer_k0.json relative to the repository
    advice = json.loads((ADVICE_DIR / "advice.json").read_text())
    common = [EMBEDDED, "-o", str(tmp_path / "engine")]
    from_flags = common + advice["build_flags"]
    from_file = common + ["--routing-config", str((ADVICE_DIR / "oea_config.json").relative_to(ROOT))]
    plan = _routing_of(from_file)
    assert plan == _routing_of(from_flags)
    assert _dry_run(from_file, capsys) == _dry_run(from_flags, capsys)
    for row in advice["per_batch"]:
        got = [plan.config_for_layer(layer).k0_for(row["batch"]) for layer in plan.moe_layers]
        assert got == row["advised"]["k0_by_layer"]
    assert _routing_of(common + ["--routing-config", str(ADVICE_DIR)]) == plan  # the directory works too


def test_engine_config_of_a_build_rebuilds_the_same_plan(tmp_path, capsys):
    """Every routing knob set away from its default survives oea_config.json -> --routing-config."""
    from oea_trt.plan.config_file import engine_config_dict, write_engine_config

    flags = ["--k0", "5", "--k0-schedule", "8:4,16:3", "--layer-k0", "0-3:8,47:2", "--max-rank", "64",
             "--top-p", "0.9", "--no-piggyback-on-context", "--all-decode"]
    first = make_plan(BuildOptions(hf_dir=Q30, output_dir=str(tmp_path / "first"), k0=5, k0_schedule=((8, 4), (16, 3)),
                                   layer_k0={0: 8, 1: 8, 2: 8, 3: 8, 47: 2}, max_rank=64, top_p=0.9,
                                   piggyback_on_context=False, batch_split="all_decode"))
    engine = tmp_path / "engine"
    write_engine_config(str(engine), engine_config_dict(first.routing, build=first.to_dict(), model={"hf_dir": Q30}))
    common = [Q30, "-o", str(tmp_path / "again")]
    again = _routing_of(common + ["--routing-config", str(engine / "oea_config.json")])
    assert again == first.routing == _routing_of(common + flags)
    assert again.base.max_rank == 64 and again.base.top_p == 0.9 and again.batch_split == "all_decode"
    assert _dry_run(common + ["--routing-config", str(engine)], capsys) == _dry_run(common + flags, capsys)


def _write_config(path, plan):
    from oea_trt.plan.config_file import engine_config_dict

    path.write_text(json.dumps(engine_config_dict(plan, build={}, model={})))
    return str(path)


@pytest.mark.parametrize("base, layers, match", [
    (dict(num_experts=64, top_k=4, k0=2), range(48),
     "num_experts is 64 in the plan, 128 in the model; top_k is 4 in the plan, 8 in the model"),
    (dict(num_experts=128, top_k=8, k0=3, renormalize=False), range(48),
     "renormalize is false in the plan, the model's norm_topk_prob is true"),
    (dict(num_experts=128, top_k=8, k0=3), range(3), "MoE layers are 0-2 in the plan, 0-47 in the model"),
    (dict(num_experts=128, top_k=8, k0=3, fill="top1"), range(48), "fill is 'top1', engines need 'invalid'"),
    (dict(num_experts=128, top_k=8, k0=3, k_max=10), range(48), "k-max must equal the model's top_k=8"),
])
def test_a_plan_that_does_not_fit_the_model_is_refused(base, layers, match, tmp_path, capsys):
    from oea_trt.plan.routing_plan import RoutingPlan
    from oea_trt.routing.config import OEAConfig

    plan = RoutingPlan(base=OEAConfig(**base), moe_layers=tuple(layers))
    path = _write_config(tmp_path / "oea_config.json", plan)
    assert _cli(["build", Q30, "-o", str(tmp_path / "e"), "--dry-run", "--routing-config", path]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--routing-config {path} does not fit {Q30}: " in err and match in err, err
    with pytest.raises(BuildPlanError, match=re.escape(match)):  # the library refuses it alike
        _plan(routing=plan)


@pytest.mark.parametrize("flag", [["--k0", "3"], ["--k0-schedule", "8:4"], ["--layer-k0", "0:8"],
                                  ["--max-rank", "128"], ["--top-p", "1"], ["--no-piggyback-on-context"],
                                  ["--all-decode"]])
def test_routing_config_excludes_every_routing_flag(flag, capsys):
    """Even a flag given at its default value (--k0 3, --top-p 1) is refused: the file decides."""
    argv = ["build", EMBEDDED, "-o", "/tmp/x", "--dry-run", "--routing-config", str(ADVICE_DIR), *flag]
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"drop {flag[0]} (or drop --routing-config" in err, err


def test_explicit_default_k0_builds_like_no_k0(capsys):
    assert _dry_run([Q30, "-o", "/tmp/x", "--k0", "3", "--top-p", "1"], capsys) == _dry_run([Q30, "-o", "/tmp/x"], capsys)


def test_help_names_the_defaults_once(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--routing-config FILE" in out and "(default: 3;" in out and "(default: 1, off)" in out
    assert "(default: None)" not in out and "==SUPPRESS==" not in out
