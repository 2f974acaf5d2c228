"""benchmarks/bench_routing.py without a GPU: argument errors exit 2 with one line, and the
report (targets, markdown, plot) is right for given timings."""
import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_routing", REPO / "benchmarks" / "bench_routing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "0"], "--tokens must be positive"),
    (["--k0", "9"], "--k0 values must be in [1, top_k=8]"),
    (["--repeats", "3"], "--repeats >= 5"),
    (["--top-k", "200"], "need 1 <= --top-k <= --experts"),
])
def test_bad_arguments_exit_2_with_one_line(bench, capsys, argv, message):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_no_gpu_is_a_clear_error(bench, capsys):
    assert bench.main(["--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def _rows(kernel_us):
    rows = []
    for T, k in kernel_us.items():
        for variant, k0, us in [("torch_vanilla", None, 18.0), ("reference", 3, 70.0), ("reference", 8, 65.0),
                                ("kernel", 3, k), ("kernel", 8, k * 0.9), ("kernel_again", 3, k * 1.01),
                                ("graph_node_floor", None, 1.1)]:
            rows.append({"tokens": T, "variant": variant, "k0": k0, "median_us": us, "min_us": us, "max_us": us,
                         "spread": 0.0, "samples_us": [us] * 5})
    return rows


def test_targets_pass_and_fail_on_the_issue_limits(bench):
    good = bench.targets(_rows({1: 3.0, 64: 3.9, 256: 9.0, 4096: 30.0}), [3, 8])
    assert all(t["pass"] for t in good), good
    bad = {t["what"]: t for t in bench.targets(_rows({1: 3.0, 64: 4.5, 256: 19.0}), [3])}
    assert not bad["kernel k0=3: <= 4.0 us per call for T <= 64"]["pass"]
    assert bad["kernel k0=3: <= 4.0 us per call for T <= 64"]["measured_us"] == 4.5
    assert not bad["kernel k0=3: faster than torch vanilla routing at every T <= 256"]["pass"]
    assert bad["kernel k0=3: faster than torch vanilla routing at every T <= 256"]["slower_at"] == [256]


def test_report_markdown_and_plot(bench, tmp_path):
    rows = _rows({1: 3.0, 64: 3.5, 256: 8.0})
    results = {"env": {"gpu": {"name": "NVIDIA H200"}, "torch": "2.11", "torch_cuda": "13.0", "driver": "580",
                       "git": {"commit": "abc"}},
               "setup": {"experts": 128, "top_k": 8, "dtype": "bfloat16", "k0": [3, 8], "calls_per_graph": 100,
                         "repeats": 7},
               "rows": rows, "correctness_problems": [], "targets": bench.targets(rows, [3, 8])}
    md = bench.render_markdown(results)
    assert "| 64 | 18.00 | 70.00 | 65.00 | 3.50 | 3.15 | 5.1x | 5.7x | 1.10 |" in md
    assert "PASS: kernel k0=3: <= 4.0 us per call for T <= 64 (measured 3.50 us)" in md
    assert "differs by at most 1.0%" in md
    bench.plot(results, str(tmp_path / "routing.png"))
    assert (tmp_path / "routing.png").read_bytes()[:4] == b"\x89PNG"


def test_baseline_columns_from_an_earlier_run(bench, tmp_path, capsys):
    import json

    earlier = {"env": {"git": {"commit": "0123456789abcdef"}}, "rows": _rows({1: 4.7, 64: 7.65})}
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(earlier))
    baseline = bench.load_baseline(str(path))
    rows = _rows({1: 3.0, 64: 3.5})
    results = {"env": {"gpu": {"name": "NVIDIA H200"}, "git": {"commit": "abc"}},
               "setup": {"experts": 128, "top_k": 8, "dtype": "bfloat16", "k0": [3, 8], "calls_per_graph": 100,
                         "repeats": 7},
               "rows": rows, "correctness_problems": [], "targets": bench.targets(rows, [3, 8]), "baseline": baseline}
    md = bench.render_markdown(results)
    assert "before: kernel k0=3 | before: kernel k0=8 |" in md
    assert "| 64 | 18.00 | 70.00 | 65.00 | 3.50 | 3.15 | 5.1x | 5.7x | 1.10 | 7.65 | 6.89 |" in md
    assert "the kernel at commit 0123456789ab" in md
    (tmp_path / "bad.json").write_text("{")
    assert bench.main(["--baseline", str(tmp_path / "bad.json")]) == 2
    assert "not a readable routing.json" in capsys.readouterr().err
