"""`oea-trt eval` end to end on a tiny saved Qwen3-MoE, its outputs, traces and input errors."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("transformers")

from oea_trt.cli import main  # noqa: E402
from oea_trt.models.random_model import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(str(tmp_path_factory.mktemp("tiny_qwen3_moe")), num_experts=16, top_k=4)


def test_eval_end_to_end(model_dir, tmp_path, capsys):
    out = tmp_path / "results"
    traces = tmp_path / "traces.pt"
    start = time.perf_counter()
    rc = main(["eval", "--model", model_dir, "--batch", "2", "4", "--sequences", "8", "--length", "12",
               "--output-dir", str(out), "--dump-traces", str(traces), "--device", "cpu"])
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert seconds < 60, f"tiny eval took {seconds:.1f}s"
    assert "B=2:" in captured.out and "B=4:" in captured.out and "OEA's delta CE below pruning's" in captured.out
    assert "eval [" in captured.err  # progress bar

    results = json.loads((out / "eval_results.json").read_text())
    assert results["top_k"] == 4 and results["k0"] == [1, 2, 3] and results["sequences"] == 8
    rows = results["rows"]
    assert len(rows) == 2 * (1 + 2 * 3)
    assert {r["routing"] for r in rows} == {"vanilla", "oea", "prune"}
    for r in rows:
        assert len(r["active_experts_per_layer"]) == 2
        assert r["ci_low"] <= r["delta_ce"] <= r["ci_high"]
    assert set(results["oea_beats_pruning"]) == {f"B={b},k0={k}" for b in (2, 4) for k in (1, 2, 3)}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "eval_pareto.png").exists()
    else:
        png = (out / "eval_pareto.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    from oea_trt.eval import load_traces
    from oea_trt.eval.traces import decode_batches

    payload = load_traces(str(traces))
    assert payload["router_logits"].shape == (2, 8 * 12, 16)
    assert payload["sequence_shape"] == [8, 12] and len(payload["domains"]) == 8
    assert payload["input_ids"].shape == (8, 12) and payload["top_k"] == 4
    batches = decode_batches(payload, batch=4, layer=1)
    assert len(batches) == 2 * 12 and batches[0].shape == (4, 16)
    assert torch.equal(batches[1], payload["router_logits"][1].view(8, 12, 16)[0:4, 1])


def test_traces_feed_the_moe_benchmark(model_dir, tmp_path):
    routing_inputs = pytest.importorskip("oea_trt.bench.routing_inputs")
    from oea_trt.eval import dump_traces
    from oea_trt.eval.model import load_model

    model, _ = load_model(model_dir)
    path = str(tmp_path / "t.pt")
    dump_traces(model, torch.randint(4, 100, (4, 6)), path)
    logits = routing_inputs.load_trace(path)
    assert logits.shape == (2, 24, 16)


@pytest.mark.parametrize("argv, message", [
    (["--sequences", "10", "--batch", "4"], "--sequences must be a multiple of every --batch value (4)"),
    (["--length", "1"], "--length must be at least 2"),
    (["--k0", "9"], "--k0 values must be in [1, top_k=4]"),
    (["--domains", "poetry"], "unknown domain"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda"),
])
def test_bad_input_is_one_line_exit_2(model_dir, tmp_path, capsys, argv, message):
    rc = main(["eval", "--model", model_dir, "--output-dir", str(tmp_path), "--quiet"] + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_model_directory(tmp_path, capsys):
    rc = main(["eval", "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err


def test_help_names_the_defaults():
    proc = subprocess.run([sys.executable, "-m", "oea_trt.cli", "eval", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "(default: the embedded model)" in text and "(default: None)" not in text


SMALL = ["--batch", "2", "--sequences", "4", "--length", "8", "--k0", "1", "--device", "cpu", "--quiet"]


def test_interrupted_eval_leaves_no_output(model_dir, tmp_path, capsys, monkeypatch):
    import oea_trt.eval as eval_package

    def interrupt(model, ids, path, *args, **kwargs):
        assert os.path.dirname(path) == str(tmp_path)  # the results are staged by now, under temporary names
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_package, "dump_traces", interrupt)
    rc = main(["eval", "--model", model_dir, *SMALL, "--output-dir", str(tmp_path / "new" / "results"),
               "--dump-traces", str(tmp_path / "t.pt")])
    assert rc == 130 and capsys.readouterr().err.endswith("oea-trt eval: interrupted\n")
    assert os.listdir(tmp_path) == []


def test_results_are_replaced_only_with_overwrite(model_dir, tmp_path, capsys):
    argv = ["eval", "--model", model_dir, *SMALL, "--output-dir", str(tmp_path)]
    assert main(argv + ["--seed", "1"]) == 0
    first = (tmp_path / "eval_results.json").read_text()
    assert main(argv + ["--seed", "2"]) == 2
    assert "already holds eval_results.json, eval_pareto.png; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "eval_results.json").read_text() == first
    assert main(argv + ["--seed", "2", "--overwrite"]) == 0
    second = json.loads((tmp_path / "eval_results.json").read_text())
    assert second["seed"] == 2 and json.loads(first)["seed"] == 1
    assert sorted(os.listdir(tmp_path)) == ["eval_pareto.png", "eval_results.json"]  # no temporary left behind


def test_a_tokenizer_that_drops_the_text_is_reported_not_looped_on():
    from oea_trt.data import tokenized_sequences

    with pytest.raises(ValueError, match=r"turned \d+ characters of the '\w+' domain into only 0 tokens \(needed 16\)"):
        tokenized_sequences(lambda text: [], None, count=2, length=16, seed=1)
    ids, _ = tokenized_sequences(lambda text: list(range(len(text) // 3)), 1, count=2, length=16, seed=1)
    assert ids.shape == (2, 16) and ids[:, 0].tolist() == [1, 1]  # three characters per token is fine
