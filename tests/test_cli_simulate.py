"""`oea-trt` CLI: help, version, the simulate table, and one-line errors for bad flags."""
import json
import subprocess
import sys

import pytest

from oea_trt import __version__
from oea_trt.cli import main
from oea_trt.moe.shapes import get_preset
from oea_trt.routing.simulate import simulate
from oea_trt.routing.synthetic import expected_uniform_active


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "oea_trt.cli", *args], capture_output=True, text=True, timeout=120)


def exit_status(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's --help, --version and errors
        return exc.code


def test_version_and_help(capsys):
    out = run_cli("--version")  # the real entry point, once
    assert out.returncode == 0 and out.stdout.strip() == f"oea-trt {__version__}"
    assert exit_status(["--help"]) == 0 and "simulate" in capsys.readouterr().out
    assert exit_status(["simulate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--bandwidth" in text and "--k0" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--batch", "0"], "expected a positive integer, got '0'"),
        (["simulate", "--batch", "x"], "expected a positive integer, got 'x'"),
        (["simulate", "--model", "llama"], "invalid choice: 'llama'"),
        (["simulate", "--k0", "9"], "--k0 values must be in [1, top_k=8], got 9"),
        (["simulate", "--top-k", "300"], "--top-k must be in [1, num_experts=128], got 300"),
        (["simulate", "--bandwidth", "-1"], "expected a positive number"),
        (["simulate", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, message, capsys):
    assert exit_status(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_simulate_prints_a_sensible_table(tmp_path, capsys):
    path = tmp_path / "sim.json"
    assert main(["simulate", "--batch", "1", "16", "--k0", "1", "3", "8", "--trials", "60", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "experts T" in out and "floor us/layer" in out
    rows = json.loads(path.read_text())["rows"]
    by = {(r["routing"], r["batch"], r["k0"]): r for r in rows}
    # Uniform vanilla follows E(1 - (1 - k/E)^B): ~82.4 at B=16.
    assert abs(by[("uniform", 16, None)]["active_experts"] - expected_uniform_active(128, 8, 16)) < 2.5
    # Skewed routing is calibrated to the paper's 48.8 at batch 16.
    assert abs(by[("skewed", 16, None)]["active_experts"] - 49) < 3
    for routing in ("uniform", "skewed"):
        ts = [by[(routing, 16, k0)]["active_experts"] for k0 in (1, 3, 8)]
        assert ts[0] < ts[1] < ts[2] == by[(routing, 16, None)]["active_experts"]
        # One token: OEA is top-k0 pruning, exactly k0 experts.
        assert by[(routing, 1, 3)]["active_experts"] == 3
    # Floor = T x expert bytes / bandwidth.
    r = by[("uniform", 16, 3)]
    assert r["floor_us"] == pytest.approx(r["active_experts"] * get_preset("qwen3-30b-a3b").expert_bytes / 4.3e12 * 1e6)


def test_simulate_function_is_seeded():
    shape = get_preset("qwen3-235b-a22b")
    a = simulate(shape, [8], [2], ["skewed"], trials=10, seed=3)
    b = simulate(shape, [8], [2], ["skewed"], trials=10, seed=3)
    assert [r.as_dict() for r in a] == [r.as_dict() for r in b]
