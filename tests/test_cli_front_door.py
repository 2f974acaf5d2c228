"""The CLI's top level: every failure is one line with the right exit status, bugs say they are
bugs, --debug / OEA_TRT_DEBUG=1 show tracebacks, help names each default once, and
`python -m oea_trt` and the examples' --help work on a plain CPU machine."""
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import oea_trt.cli.commands.simulate as simulate_command
from oea_trt.cli import command_modules, main
from oea_trt.cli.failures import DEBUG_ENV, classify, run_reporting_failures

ROOT = Path(__file__).resolve().parent.parent
SIMULATE = ["simulate", "--trials", "1", "--batch", "2", "--k0", "1"]


def run_python(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("exc, status, message", [
    (ValueError("k0 must be in [1, 8], got 9\nmore detail"), 2, r"^k0 must be in \[1, 8\], got 9$"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/x/y.pt"), 2, "^/x/y.pt: no such file or directory$"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/out.json"), 1,
     "^cannot access /ro/out.json: Permission denied$"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/r.json"), 1, "no space left on the device writing /full"),
    (ModuleNotFoundError("No module named 'transformers'", name="transformers"), 1,
     r"package 'transformers', which is not installed here \(pip install 'oea-trt\[hf\]'\)"),
    (MemoryError(), 1, "^out of memory"),
    (KeyError("rows"), 1, r"^internal error: KeyError: 'rows' \(a bug in oea-trt; rerun with --debug"),
])
def test_classify(exc, status, message):
    got_status, line = classify(exc)
    assert got_status == status and re.search(message, line), line
    assert "\n" not in line


def test_interrupt_is_130_and_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_reporting_failures(interrupted, "prog") == 130
    assert capsys.readouterr().err == "prog: interrupted\n"


def test_a_bug_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("rows")

    monkeypatch.setattr(simulate_command, "simulate", broken)
    assert main(SIMULATE) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "oea-trt simulate: internal error: KeyError: 'rows'" in err
    for argv in (SIMULATE + ["--debug"], ["--debug"] + SIMULATE):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and "KeyError: 'rows'" in err
        assert err.rstrip().endswith("rerun with --debug or OEA_TRT_DEBUG=1 for the traceback)")
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert main(SIMULATE) == 1
    assert capsys.readouterr().err.startswith("Traceback")


def test_expected_failures_show_a_traceback_only_with_debug(tmp_path, capsys):
    argv = SIMULATE + ["--json", str(tmp_path)]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(argv + ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].endswith("is a directory; give a file name inside it")


def help_text(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_names_each_default_once(capsys):
    names = [m.NAME for m in command_modules()]
    assert {"simulate", "eval", "build", "triton-repo"} <= set(names)
    for name in names:
        text = help_text(name, capsys)
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: False)" not in flat, name
        for block in re.split(r"\n  (?=-)", text):  # one block per option
            assert " ".join(block.split()).count("(default") <= 1, block
    triton = " ".join(help_text("triton-repo", capsys).split())
    assert "--http-port HTTP_PORT Triton's HTTP/REST port (default: 8000)" in triton
    build = " ".join(help_text("build", capsys).split())
    assert "(default: ENGINE_DIR.ckpt)" in build and "--max-batch-size MAX_BATCH_SIZE most requests in flight " \
                                                      "(default: 64)" in build


def test_python_dash_m_oea_trt_is_the_cli():
    from oea_trt import __version__

    out = run_python("-m", "oea_trt", "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"oea-trt {__version__}"
    out = run_python("-m", "oea_trt", "simulate", "--json", "/")
    assert out.returncode == 2 and out.stderr == "oea-trt simulate: error: --json / is a directory; give a file " \
                                                 "name inside it\n"


def test_examples_help_needs_no_tensorrt_llm():
    for example in ("examples/generate.py", "examples/pytorch_backend_llm.py"):
        out = run_python(example, "--help")
        assert out.returncode == 0 and "usage:" in out.stdout and "--debug" in out.stdout, out.stderr


def test_readme_walkthrough_runs_on_the_repository_data(tmp_path, monkeypatch, capsys):
    """The README's CPU walkthrough: the build plan and the Triton repository from tests/data and
    the embedded model, and the Python snippet, on a machine without GPU or TensorRT-LLM."""
    monkeypatch.chdir(ROOT)
    assert main(["build", "tests/data/qwen3-30b-a3b", "-o", str(tmp_path / "engine"), "--k0", "3", "--dry-run"]) == 0
    assert "OEA k0=3 in all 48 MoE layers" in capsys.readouterr().out
    assert not (tmp_path / "engine").exists()  # a dry run writes nothing
    out = tmp_path / "oea-triton"
    assert main(["triton-repo", "tests/data/engine-stub", "--tokenizer-dir", "oea_trt/models/embedded",
                 "-o", str(out)]) == 0
    assert (out / "launch_triton.sh").is_file() and (out / "model_repository" / "tensorrt_llm" / "config.pbtxt").is_file()

    import torch

    from oea_trt import OEAConfig, route, vanilla_route

    config = OEAConfig(num_experts=128, top_k=8, k0=3)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits = torch.randn(16, 128, device=device)
    result = route(logits, config)
    assert result.expert_ids.shape == (16, 8) and result.weights.shape == (16, 8)
    assert int(result.num_active) <= int(vanilla_route(logits.cpu(), 8, True).num_active)
