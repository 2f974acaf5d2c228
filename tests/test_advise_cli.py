"""`oea-trt eval --layer-sensitivity` and `oea-trt advise` end to end on a tiny saved Qwen3-MoE;
the advised flags through `oea-trt build --dry-run`; input errors."""
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")

from oea_trt.advise.outputs import build_flags, routing_plan  # noqa: E402
from oea_trt.advise.quality import QualityTable  # noqa: E402
from oea_trt.advise.search import advise  # noqa: E402
from oea_trt.advise.latency import benchmark_model  # noqa: E402
from oea_trt.cli import build_parser, main  # noqa: E402
from oea_trt.cli.commands.build import options_from_args  # noqa: E402
from oea_trt.integrations.trtllm.build_plan import make_plan  # noqa: E402
from oea_trt.models.random_model import save_tiny_model  # noqa: E402
from oea_trt.plan.config_file import read_engine_config, routing_from_engine_config  # noqa: E402
from oea_trt.plan.hf_config import qwen3_moe_spec  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_advise import synthetic_results  # noqa: E402

EMBEDDED = os.path.join(ROOT, "oea_trt", "models", "embedded")
QWEN3_30B = os.path.join(ROOT, "tests", "data", "qwen3-30b-a3b")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny model with a strong router (so k0 matters) and its eval with per-layer sensitivity."""
    root = tmp_path_factory.mktemp("advise")
    model_dir = save_tiny_model(str(root / "model"), num_experts=16, top_k=4, num_layers=3)
    out = root / "eval"
    rc = main(["eval", "--model", model_dir, "--batch", "2", "4", "--sequences", "8", "--length", "12",
               "--layer-sensitivity", "--no-prune", "--output-dir", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    return model_dir, str(out / "eval_results.json")


def test_layer_sensitivity_rows(evaluated):
    _, path = evaluated
    results = json.loads(open(path).read())
    rows = results["layer_sensitivity"]
    assert {(r["layer"], r["batch"], r["k0"]) for r in rows} == {(i, b, k) for i in range(3) for b in (2, 4)
                                                                   for k in (1, 2, 3)}
    oea = {(r["batch"], r["k0"]): r for r in results["rows"] if r["routing"] == "oea"}
    vanilla = {r["batch"]: r for r in results["rows"] if r["routing"] == "vanilla"}
    for r in rows:
        assert np.mean(r["sequence_delta_ce"]) == pytest.approx(r["delta_ce"], abs=1e-7)
        assert len(r["sequence_delta_ce"]) == 8 and r["ci_low"] <= r["delta_ce"] <= r["ci_high"]
        assert r["active_experts"] == r["active_experts_per_layer"][r["layer"]]
        assert r["active_experts"] < r["vanilla_active_experts"]
        # layers before the probed one see vanilla hidden states and route vanilla: same T
        for before in range(r["layer"]):
            assert r["active_experts_per_layer"][before] == pytest.approx(
                vanilla[r["batch"]]["active_experts_per_layer"][before], abs=1e-9)
        # layer 0 at k0 sees the same inputs alone as with every layer at k0: same T
        if r["layer"] == 0:
            assert r["active_experts"] == pytest.approx(oea[(r["batch"], r["k0"])]["active_experts_per_layer"][0],
                                                        abs=1e-9)


def _flags_build_plan(hf_dir, flags, tmp_path):
    args = build_parser().parse_args(["build", hf_dir, "-o", str(tmp_path / "engine"), "--dry-run"] + flags)
    return make_plan(options_from_args(args)).routing


def test_advise_end_to_end_with_check(evaluated, tmp_path, capsys):
    model_dir, path = evaluated
    out = tmp_path / "advice"
    rc = main(["advise", path, "--budget", "0.01", "--model", model_dir, "--output-dir", str(out), "--check",
               "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "build flags: --k0" in captured.out and "check (the eval's 8 sequences" in captured.out
    advice = json.loads((out / "advice.json").read_text())
    assert [p["batch"] for p in advice["per_batch"]] == [2, 4]
    flags = advice["build_flags"]
    assert os.path.exists(out / "oea_config.json")
    assert (out / "layer_k0.json").exists() == ("--layer-k0" in flags)
    # the plan `oea-trt build` makes from the flags is the advised plan, and oea_config.json holds it
    built = _flags_build_plan(model_dir, flags, tmp_path)
    stored = routing_from_engine_config(read_engine_config(str(out)))
    # ... and the printed one-flag command builds that plan from oea_config.json
    config_flags = ["--routing-config", str(out / "oea_config.json")]
    assert "-o ENGINE_DIR " + " ".join(config_flags) in captured.out
    assert _flags_build_plan(model_dir, config_flags, tmp_path) == built
    for row in advice["per_batch"]:
        want = row["advised"]["k0_by_layer"]
        assert [built.config_for_layer(i).k0_for(row["batch"]) for i in built.moe_layers] == want
        assert [stored.config_for_layer(i).k0_for(row["batch"]) for i in stored.moe_layers] == want
    # the check routed what was advised; a uniform k0 on the eval's sequences is the eval's own row
    results = json.loads(open(path).read())
    oea = {(r["batch"], r["k0"]): r for r in results["rows"] if r["routing"] == "oea"}
    assert len(advice["check"]) == 1 and advice["check"][0]["same_sequences_as_eval"]
    for row, check in zip(advice["per_batch"], advice["check"][0]["rows"]):
        assert check["k0_by_layer"] == row["advised"]["k0_by_layer"]
        k = set(check["k0_by_layer"])
        if len(k) == 1 and k != {4}:
            measured = oea[(row["batch"], k.pop())]
            assert check["measured_delta_ce"] == pytest.approx(measured["delta_ce"], abs=1e-12)
            assert check["active_experts"] == pytest.approx(measured["active_experts_per_layer"], abs=1e-9)
    png = (out / "advise_pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("hf_dir", [EMBEDDED, QWEN3_30B])
def test_advised_flags_are_accepted_by_build_dry_run(hf_dir, tmp_path, capsys):
    """Per-layer k0 below a schedule, on the embedded model's 3 layers (in the 30B config the
    other 45 MoE layers take --k0)."""
    table = QualityTable.from_results(synthetic_results(np.random.default_rng(2), sensitivity=[1e-4, 5.0, 5.0]))
    budget = table.layer_effect(1, 4, 7).delta_ce * 0.5
    a = advise(table, benchmark_model("h100"), {4: budget, 16: 0.01, 64: 0.01}, {4: 0.2, 16: 0.4, 64: 0.4})
    assert a.layer_k0 and a.schedule, (a.layer_k0, a.schedule)
    layer_file = tmp_path / "layer_k0.json"
    layer_file.write_text(json.dumps({str(k): v for k, v in a.layer_k0.items()}))
    flags = build_flags(a, str(layer_file))
    rc = main(["build", hf_dir, "-o", str(tmp_path / "engine"), "--dry-run"] + flags)
    out = capsys.readouterr().out
    assert rc == 0 and "OEA engine build plan" in out
    built = _flags_build_plan(hf_dir, flags, tmp_path)
    if hf_dir == EMBEDDED:
        assert built.layer_k0 == routing_plan(a, qwen3_moe_spec(hf_dir)).layer_k0
        for b in a.batches:
            assert tuple(built.config_for_layer(i).k0_for(b) for i in built.moe_layers) == a.choices[b].k0_by_layer


@pytest.mark.parametrize("argv, message", [
    ([], "no quality budget for B=2"),
    (["--budget", "0.01", "--batch", "8"], "batch size(s) [8] were not evaluated"),
    (["--budget", "0.01", "--batch", "2:1", "4"], "give a weight to every batch size"),
    (["--budget-per-batch", "16:0.01"], "--budget-per-batch names B=[16]"),
    (["--budget", "0.01", "--gpu", "a100"], "--gpu: no committed MoE benchmark fit for 'a100'"),
    (["--budget", "0.01", "--bench-results", "x.json", "--floor-bandwidth", "3"], "pass one"),
    (["--budget", "0.01", "--check-seed", "5"], "--check-seed needs --check"),
])
def test_bad_input_is_one_line_exit_2(evaluated, tmp_path, capsys, argv, message):
    model_dir, path = evaluated
    rc = main(["advise", path, "--model", model_dir, "--output-dir", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--budget", "-1"], "expected a number >= 0"),
    (["--budget-per-batch", "4=0.1"], "expected B:NATS pairs"),
    (["--budget", "0.1", "--batch", "4:0"], "expected B or B:WEIGHT"),
    (["--budget", "0.1", "--layer-shape", "llama"], "invalid choice: 'llama'"),
])
def test_bad_flag_values(evaluated, capsys, argv, message):
    _, path = evaluated
    with pytest.raises(SystemExit) as exc:
        main(["advise", path] + argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_not_an_eval_results_file(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"rows": "nope"}))
    assert main(["advise", str(bad), "--budget", "0.01"]) == 2
    assert "not an `oea-trt eval` results file" in capsys.readouterr().err
    assert main(["advise", str(tmp_path / "missing.json"), "--budget", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "eval results" in err and "missing.json does not exist" in err


def test_help_lists_the_inputs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["advise", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    for flag in ("--budget", "--budget-per-batch", "--batch", "--gpu", "--bench-results", "--floor-bandwidth",
                 "--check", "--bound", "(default: None)"):
        assert (flag in out) == (flag != "(default: None)"), flag


@pytest.mark.parametrize("argv, description", [
    (["--floor-bandwidth", "3.0", "--layer-shape", "qwen3-235b-a22b"], "memory-bound floor: qwen3-235b-a22b layer"),
    (["--gpu", "h200"], "NVIDIA H200, qwen3-30b-a3b layer: MoE benchmark fit"),
    (["--bench-results", os.path.join(ROOT, "benchmarks", "results", "moe_h100", "results.json")],
     "NVIDIA H100 80GB HBM3, qwen3-30b-a3b layer: MoE benchmark fit"),
])
def test_latency_model_choices(evaluated, tmp_path, capsys, argv, description):
    model_dir, path = evaluated
    out = tmp_path / "a"
    assert main(["advise", path, "--model", model_dir, "--budget", "0.01", "--batch", "4:3", "2:1",
                 "--output-dir", str(out)] + argv) == 0
    advice = json.loads((out / "advice.json").read_text())
    assert advice["latency_model"]["description"].startswith(description)
    assert advice["inputs"]["weights"] == {"2": 0.25, "4": 0.75}
    assert description in capsys.readouterr().out
