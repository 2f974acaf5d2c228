"""The MoE benchmark's logic without a GPU: routing inputs and traces, rotation, fits, the
report and its targets, the CLI, and the whole per-preset flow on a tiny layer with timing
injected (CUDA-graph timing itself runs only on the GPU box: scripts/gpu/moe.sh)."""
import json

import numpy as np
import pytest
import torch

from moe_triton_cpu import DTYPE, interpreter_numpy_fix  # sets TRITON_INTERPRET=1 without a GPU

from oea_trt import OEAConfig, oea_route
from oea_trt.bench import moe as moe_bench
from oea_trt.bench import report_moe
from oea_trt.bench.bandwidth import Bandwidth
from oea_trt.bench.report import linear_fit, markdown_table
from oea_trt.bench.rotation import copies_needed, copies_that_fit
from oea_trt.bench.routers import pick_router
from oea_trt.bench.routing_inputs import TraceError, TraceSource, load_trace, make_sources
from oea_trt.bench.timing import Timing
from oea_trt.cli import main
from oea_trt.moe.shapes import MoEShape, get_preset

BW = Bandwidth(copy_tb_s=4.0, read_tb_s=3.8, nbytes=4 << 30, copy_spread=0.01, read_spread=0.01)


# ---- inputs -----------------------------------------------------------------------------------


def test_sources_are_deterministic_and_shaped():
    sources = make_sources(["uniform", "skewed"], 128)
    for source in sources.values():
        a, b = source.draw(16, seed=3), source.draw(16, seed=3)
        assert a.shape == (16, 128) and a.dtype == torch.float32 and torch.equal(a, b)
        assert not torch.equal(a, source.draw(16, seed=4))
    with pytest.raises(TraceError, match="needs a trace file"):
        make_sources(["trace"], 128)


@pytest.mark.parametrize("form", ["pt_tensor", "pt_dict", "npz_named", "npz_single", "pt_2d"])
def test_trace_forms_load(tmp_path, form):
    logits = torch.randn(3, 40, 16)
    path = tmp_path / ("t.npz" if form.startswith("npz") else "t.pt")
    if form == "pt_tensor":
        torch.save(logits, path)
    elif form == "pt_dict":
        torch.save({"router_logits": logits, "meta": torch.zeros(1)}, path)
    elif form == "npz_named":
        np.savez(path, router_logits=logits.numpy(), other=np.zeros(2))
    elif form == "npz_single":
        np.savez(path, logits.numpy())
    else:
        torch.save(logits[0], path)
    loaded = load_trace(str(path))
    want = logits[:1] if form == "pt_2d" else logits
    assert torch.equal(loaded, want)
    source = TraceSource(str(path), 16)
    draw = source.draw(8, seed=5)
    assert torch.equal(draw, source.draw(8, seed=5))
    # A draw is `batch` distinct tokens of one layer (seed mod layers).
    rows = {tuple(r.tolist()) for r in want[5 % len(want)]}
    assert all(tuple(r.tolist()) in rows for r in draw) and len({tuple(r.tolist()) for r in draw}) == 8


def test_trace_with_sequence_shape_draws_one_position_of_consecutive_sequences(tmp_path):
    """dump_traces' layout: tokens sequence-major, a decode batch = B sequences at one position."""
    n, length, E = 6, 5, 16
    logits = torch.randn(2, n * length, E)
    torch.save({"router_logits": logits, "sequence_shape": [n, length]}, tmp_path / "seq.pt")
    source = TraceSource(str(tmp_path / "seq.pt"), E)
    for seed in range(6):
        draw = source.draw(3, seed=seed)
        grid = logits[seed % 2].view(n, length, E)
        hits = [(s, t) for s in range(n - 2) for t in range(length) if torch.equal(grid[s:s + 3, t], draw)]
        assert len(hits) == 1, seed
    with pytest.raises(TraceError, match="holds 6 sequences, fewer than batch 7"):
        source.draw(7, seed=0)
    torch.save({"router_logits": logits, "sequence_shape": [4, 4]}, tmp_path / "bad.pt")
    with pytest.raises(TraceError, match="does not match its 30 tokens"):
        TraceSource(str(tmp_path / "bad.pt"), E)


def test_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="does not exist"):
        load_trace(str(tmp_path / "missing.pt"))
    bad_ext = tmp_path / "t.json"
    bad_ext.write_text("{}")
    with pytest.raises(TraceError, match=r"must end in \.pt or \.npz"):
        load_trace(str(bad_ext))
    torch.save({"logits": torch.zeros(2, 4)}, tmp_path / "k.pt")
    with pytest.raises(TraceError, match="without key 'router_logits'"):
        load_trace(str(tmp_path / "k.pt"))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4)), b=np.zeros((2, 4)))
    with pytest.raises(TraceError, match="name the logits 'router_logits'"):
        load_trace(str(tmp_path / "two.npz"))
    torch.save(torch.zeros(2, 3, 4, 5), tmp_path / "4d.pt")
    with pytest.raises(TraceError, match=r"\[num_layers, tokens, E\]"):
        load_trace(str(tmp_path / "4d.pt"))
    torch.save(torch.zeros(2, 4, dtype=torch.int32), tmp_path / "int.pt")
    with pytest.raises(TraceError, match="floating-point"):
        load_trace(str(tmp_path / "int.pt"))
    torch.save(torch.zeros(1, 4, 16), tmp_path / "e16.pt")
    with pytest.raises(TraceError, match="has 16 experts per row, the layer has E=128"):
        TraceSource(str(tmp_path / "e16.pt"), 128)
    with pytest.raises(TraceError, match="fewer than batch 8"):
        TraceSource(str(tmp_path / "e16.pt"), 16).draw(8, seed=0)


def test_rotation_defeats_l2():
    l2 = 60 << 20
    expert = get_preset("qwen3-30b-a3b").expert_bytes
    copies = copies_needed(expert, l2)
    assert (copies - 1) * expert >= 2 * l2 and (copies - 2) * expert < 2 * l2
    assert copies_needed(10 * l2, l2) == 4  # never fewer than min_copies
    assert copies_that_fit(20, bytes_per_copy=10, free_bytes=100) == 5
    assert copies_that_fit(20, bytes_per_copy=1000, free_bytes=100) == 2
    with pytest.raises(ValueError):
        copies_needed(0, l2)


def test_linear_fit_and_table():
    slope, intercept, r2 = linear_fit([1, 2, 3, 4], [5, 7, 9, 11])
    assert (slope, intercept, r2) == pytest.approx((2, 3, 1))
    assert markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "| :--- | ---: |", "| 1 | 2 |"]


def test_reference_router_is_picked_when_asked():
    assert pick_router("reference").name == "reference"


# ---- the report -------------------------------------------------------------------------------


def _t(us):
    return Timing(us, us * 0.99, us * 1.01, [us] * 5)


def _synthetic_results(us_per_expert=2.5, fixed=8.0, grouped_mm_factor=1.5):
    """Rows of the real shape, with latency = us_per_expert * T + fixed (+ routing 4 us)."""
    rows = []
    for preset in ("qwen3-30b-a3b", "qwen3-235b-a22b-tp8"):
        shape = get_preset(preset)
        for mode, base_t in (("uniform", 82.0), ("skewed", 49.0)):
            for batch in (1, 16):
                for variant, k0 in [("vanilla", None), ("k0=3", 3), ("vanilla#2", None)]:
                    t = base_t * (batch / 16) * (0.5 if k0 else 1.0) + 1
                    active = [round(t)] * 2
                    moe_us = us_per_expert * active[0] + fixed
                    rows.append(moe_bench._row(shape, mode, batch, variant, k0, "triton", active, _t(moe_us),
                                               _t(moe_us + 4), BW))
                    if variant != "vanilla#2":
                        rows.append(moe_bench._row(shape, mode, batch, variant, k0, "grouped_mm", active,
                                                   _t(moe_us * grouped_mm_factor), None, BW))
    moe_bench._add_ratios(rows)
    presets = {p: {"expert_bytes": get_preset(p).expert_bytes} for p in ("qwen3-30b-a3b", "qwen3-235b-a22b-tp8")}
    return {"env": {"gpu": {"name": "H200"}, "torch": "2.11", "git": {"commit": "abc"}}, "bandwidth": BW.to_dict(),
            "spec": {"repeats": 5, "modes": ["uniform", "skewed"]}, "routing": {"impl": "kernel", "note": "test"},
            "presets": presets, "rows": rows}


def test_fits_recover_the_latency_model():
    fits = report_moe.fits(_synthetic_results(us_per_expert=2.5, fixed=8.0))
    assert fits["qwen3-30b-a3b"]["moe"]["us_per_expert"] == pytest.approx(2.5)
    assert fits["qwen3-30b-a3b"]["moe"]["fixed_us"] == pytest.approx(8.0)
    assert fits["qwen3-30b-a3b"]["total"]["fixed_us"] == pytest.approx(12.0)
    assert fits["qwen3-30b-a3b"]["total"]["r2"] == pytest.approx(1.0)


def test_targets_met_and_not_met():
    good = {c["name"].split(" ")[0]: c for c in report_moe.targets(_synthetic_results(fixed=1.0))}
    assert all(c["met"] for c in good.values()), good
    # A big fixed cost sinks the ratio target; a slow kernel loses to grouped_mm and to the bandwidth bar.
    bad = report_moe.targets(_synthetic_results(us_per_expert=4.0, fixed=60.0, grouped_mm_factor=0.9))
    assert [c["met"] for c in bad] == [False, False, False, True]
    v = [r for r in _synthetic_results(fixed=1.0)["rows"] if r["impl"] == "triton" and r["mode"] == "skewed"
         and r["batch"] == 16 and r["preset"] == "qwen3-30b-a3b"]
    by = {r["variant"]: r for r in v}
    assert by["k0=3"]["ratio_total"] == pytest.approx((2.5 * by["k0=3"]["T"] + 5) / (2.5 * by["vanilla"]["T"] + 5))


def _two_kernels(fused_fixed=2.0, triton_fixed=13.0):
    """Synthetic results with rows of both of our kernels: the fused one with a smaller fixed cost."""
    results = _synthetic_results(fixed=triton_fixed)
    fused = _synthetic_results(fixed=fused_fixed)["rows"]
    for r in fused:
        if r["impl"] == "triton":
            results["rows"].append(dict(r, impl="fused"))
    return results


def test_targets_judge_each_check_on_the_better_kernel():
    results = _two_kernels(fused_fixed=2.0, triton_fixed=13.0)
    assert report_moe.ours(results) == ["fused", "triton"] and report_moe.best_impl(results) == "fused"
    ratio = report_moe.targets(results)[2]
    assert ratio["impl"] == "fused" and ratio["value"].startswith("one launch, atomic sums: ")
    assert "3 launches: " in ratio["value"]
    v = report_moe._one(results, impl="fused", preset="qwen3-30b-a3b", mode="skewed", batch=16, variant="vanilla")
    o = report_moe._one(results, impl="fused", preset="qwen3-30b-a3b", mode="skewed", batch=16, variant="k0=3")
    assert ratio["value"].startswith(f"one launch, atomic sums: {o['total_us'] / v['total_us']:.3f}")
    fits = {i: report_moe.fits(results, i)["qwen3-30b-a3b"]["moe"]["fixed_us"] for i in ("fused", "triton")}
    assert fits == pytest.approx({"fused": 2.0, "triton": 13.0})
    # The other way round, the three-launch kernel is the headline.
    assert report_moe.best_impl(_two_kernels(fused_fixed=20.0, triton_fixed=3.0)) == "triton"
    md = report_moe.render_markdown(results)
    assert "(one launch, atomic sums / 3 launches)" in md
    assert "| qwen3-30b-a3b | one launch, atomic sums |" in md


@pytest.mark.parametrize("counts,name", [([3], "3 launches"), ([1], "1 launch"), ([1, 3], "1 or 3 launches"),
                                         (None, "3 launches")])
def test_triton_kernel_is_named_by_the_launches_the_run_timed(counts, name):
    """impl "triton" times its one-launch path where the tuner picked it (up to 16 tokens by
    default) and 3 launches elsewhere: the report names what the run recorded."""
    info = {} if counts is None else {"launches": {"triton": counts}}
    assert report_moe.label({"presets": {"qwen3-30b-a3b": info}}, "triton") == name


def test_report_files_and_render_cli(tmp_path):
    results = _synthetic_results()
    paths = report_moe.write_report(results, str(tmp_path / "a"))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["latency_vs_B.png", "latency_vs_T.png", "report.md", "results.json"]
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Headline: qwen3-30b-a3b layer, skewed routing, batch 16" in md
    assert "| k0=3 |" in md and "torch._grouped_mm" in md
    for png in ("latency_vs_T.png", "latency_vs_B.png"):
        assert (tmp_path / "a" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["fits"]["qwen3-30b-a3b"]["moe"]["us_per_expert"] == pytest.approx(2.5)
    assert main(["bench", "moe", "--render", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.md").read_text() == md


def test_cli_errors(tmp_path, capsys):
    assert main(["bench", "moe", "--render", str(tmp_path / "none.json")]) == 2
    assert "cannot read results" in capsys.readouterr().err
    torch.save(torch.zeros(1, 4, 16), tmp_path / "e16.pt")
    assert main(["bench", "moe", "--trace", str(tmp_path / "e16.pt")]) == 2
    assert "has 16 experts per row but preset qwen3-30b-a3b has 128" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "moe", "--preset", "qwen3-30b-a3b"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


# ---- the per-preset flow on a tiny layer ---------------------------------------------------------


@pytest.mark.slow
def test_bench_preset_flow_on_cpu(monkeypatch):
    """Everything bench_preset does but graph timing: correctness of all impls, routing per
    variant, rows, ratios. The injected timer runs the work once and reports 1 us per call."""
    pytest.importorskip("triton")

    def fake_graph(work, calls=1, repeats=5, replays=3):
        work()
        return _t(1.0)

    def fake_eager(work, calls=1, repeats=5, iters=2, warmup=1):
        work()
        return _t(3.0)

    monkeypatch.setattr(moe_bench, "time_in_graph", fake_graph)
    monkeypatch.setattr(moe_bench, "time_eager", fake_eager)
    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    spec = moe_bench.MoEBenchSpec(batch_sizes=(4,), k0s=(2,), copies=2, tune=False, routing="reference",
                                  loop_batches=(4,), baseline_k0s=(2,), device="cpu", dtype=str(DTYPE).split(".")[1])
    with interpreter_numpy_fix():
        info, rows = moe_bench.bench_preset(shape, spec, pick_router("reference"), BW)
    assert all(info["correctness"][impl]["ok"] for impl in ("fused", "triton", "grouped_mm")), info["correctness"]
    assert not [r for r in rows if r["impl"] == "error"], rows
    assert len([r for r in rows if r["impl"] == "fused"]) == 2 * 3  # both of our kernels, side by side
    ours = [r for r in rows if r["impl"] == "triton"]
    assert len(ours) == 2 * 3  # modes x (vanilla, k0=2, vanilla#2)
    assert len([r for r in rows if r["impl"] == "grouped_mm"]) == 2 * 2
    assert [(r["mode"], r["batch"]) for r in rows if r["impl"] == "loop"] == [("uniform", 4)]
    # T is the mean distinct experts of the row's routing draws, exactly as the router reports.
    source = make_sources(["skewed"], 8)["skewed"]
    row = next(r for r in ours if r["mode"] == "skewed" and r["batch"] == 4 and r["variant"] == "k0=2")
    draws = [source.draw(4, seed=1_000 * 4 + c) for c in range(2)]
    want = [int(oea_route(d, OEAConfig(8, 4, 2)).num_active) for d in draws]
    assert row["T"] == sum(want) / 2 and row["T_min"] == min(want)
    assert row["moe_us"] == 1.0 and row["routing_us"] == pytest.approx(0.0) and row["ratio_total"] == 1.0
    assert row["floor_us"] == pytest.approx(row["T"] * shape.expert_bytes / 4e12 * 1e6)


# ---- the tuner's search ----------------------------------------------------------------------


def test_coordinate_search_keeps_tiles_unless_a_change_beats_the_margin():
    """A noise-level win (0.5%) does not move the tiles; a real one (2%) does, and the next
    step varies the new best; with no margin the 0.5% win is taken."""
    times = {"default": 100.0, "wide": 99.5, "deep": 98.0, "deep+slots": 97.9, "deep+pdl": 95.0}
    measured = []

    def measure(cfg):
        measured.append(cfg)
        return times[cfg]

    steps = [[lambda c: "wide", lambda c: "deep"],
             [lambda c: c + "+slots", lambda c: c + "+pdl"]]
    best, us = moe_bench.coordinate_search("default", steps, measure, margin=0.01)
    assert (best, us) == ("deep+pdl", 95.0)
    assert measured == ["default", "wide", "deep", "deep+slots", "deep+pdl"]
    best, us = moe_bench.coordinate_search("default", [[lambda c: "wide"]], measure, margin=0.01)
    assert (best, us) == ("default", 100.0)
    assert moe_bench.coordinate_search("default", [[lambda c: "wide"]], measure, margin=0.0) == ("wide", 99.5)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["fused", "triton"])
def test_tune_kernel_tries_every_candidate_on_cpu(monkeypatch, impl):
    """The whole search of each kernel runs (interpreter; each candidate's work is done once)
    and keeps the fastest config it measured. The injected timer makes each measurement 2%
    faster than the one before, so every change that runs is kept."""
    pytest.importorskip("triton")
    from oea_trt.moe.layer import ExpertWeights

    clock = iter(range(100))

    def fake_graph(work, calls=1, repeats=5, replays=3):
        work()
        us = 100.0 * 0.98 ** next(clock)
        return Timing(us, us, us, [us])

    monkeypatch.setattr(moe_bench, "time_in_graph", fake_graph)
    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    spec = moe_bench.MoEBenchSpec(copies=1, routing="reference", device="cpu", dtype=str(DTYPE).split(".")[1])
    weights = [ExpertWeights.random(shape, device="cpu", dtype=DTYPE, seed=0).with_down_transposed()]
    with interpreter_numpy_fix():
        best, us, tried = moe_bench.tune_kernel(shape, weights, pick_router("reference"), 4, spec, impl)
    timed = [(cfg, t) for cfg, t in tried if not isinstance(t, str)]
    assert len(tried) >= 6 and len(timed) >= len(tried) - 1  # only PDL may fail in the interpreter
    assert us == min(t for _, t in timed) and best.to_dict() == min(timed, key=lambda ct: ct[1])[0]


def test_a_run_of_recorded_routing_only_reports_its_ratios_on_the_better_kernel():
    """A run with only the 'trace' routing (scripts/gpu/moe.sh's second part): the better kernel
    is judged on its k0=3 row, and the report has the recorded-routing section, no headline."""
    results = _two_kernels(fused_fixed=20.0, triton_fixed=3.0)
    results["rows"] = [dict(r, mode="trace") for r in results["rows"] if r["mode"] == "skewed"]
    results["spec"] = dict(results.get("spec", {}), modes=["trace"], trace_path="/x/router_traces.pt")
    assert report_moe.best_impl(results) == "triton"
    md = report_moe.render_markdown(results)
    assert "## Recorded routing: qwen3-30b-a3b layer fed the router logits of router_traces.pt, batch 16" in md
    assert "## Headline" not in md and "(headline: 3 launches)" in md
