"""The MoE benchmark's and the tuner's logic without a GPU: routing inputs and traces, rotation,
fits, the report and its targets, the CLI, the tuner's search, and the whole per-preset flows
on a tiny layer with timing injected (CUDA-graph timing itself runs only on the GPU box:
scripts/gpu/moe.sh, scripts/gpu/tune.sh)."""
import json

import numpy as np
import pytest
import torch

from moe_triton_cpu import DTYPE, interpreter_numpy_fix  # sets TRITON_INTERPRET=1 without a GPU

from oea_trt import OEAConfig, oea_route
from oea_trt.bench import moe as moe_bench
from oea_trt.bench import moe_timing, report_moe, tune
from oea_trt.bench.bandwidth import Bandwidth
from oea_trt.bench.report import linear_fit, markdown_table
from oea_trt.bench.rotation import copies_needed, copies_that_fit
from oea_trt.bench.routers import pick_router
from oea_trt.bench.routing_inputs import MODES, TraceError, TraceSource, load_trace, make_sources
from oea_trt.bench.timing import Timing
from oea_trt.cli import main
from oea_trt.moe.impls import IMPLS, OURS
from oea_trt.moe.shapes import MoEShape, get_preset
from oea_trt.routing.synthetic import GENERATORS

BW = Bandwidth(copy_tb_s=4.0, read_tb_s=3.8, nbytes=4 << 30, copy_spread=0.01, read_spread=0.01)


# ---- inputs -----------------------------------------------------------------------------------


def test_sources_are_deterministic_and_shaped():
    assert MODES == (*GENERATORS, "trace")
    sources = make_sources(list(GENERATORS), 128)
    assert list(sources) == list(GENERATORS)
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
                    rows.append(moe_bench.make_row(shape, mode, batch, variant, k0, "triton", active, _t(moe_us),
                                                   _t(moe_us + 4), BW))
                    if variant != "vanilla#2":
                        rows.append(moe_bench.make_row(shape, mode, batch, variant, k0, "grouped_mm", active,
                                                       _t(moe_us * grouped_mm_factor), None, BW))
    moe_bench.add_ratios(rows)
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


def test_report_names_come_from_the_registry_with_the_launches_the_run_timed():
    """Our kernel is named by its IMPLS label and the launches the run recorded per preset (1 on
    the one-launch path, 3 on the three-launch path); other impls by their IMPLS label."""
    for counts, tail in (([3], ", 3 launches"), ([1], ", 1 launch"), ([1, 3], ", 1 or 3 launches"), (None, "")):
        info = {} if counts is None else {"launches": {"triton": counts}}
        assert report_moe.label({"presets": {"qwen3-30b-a3b": info}}, "triton") == IMPLS["triton"].label + tail
    assert report_moe.label({"presets": {}}, "grouped_mm") == IMPLS["grouped_mm"].label
    assert report_moe.label({"presets": {}}, "retired") == "retired"


def test_old_results_with_retired_impls_still_render():
    """A results file with rows of an impl no longer in IMPLS (the retired "fused" kernel) renders:
    those rows are left out of our kernels and the targets."""
    results = _synthetic_results(fixed=1.0)
    results["rows"] += [dict(r, impl="fused", total_us=1.0, moe_us=1.0) for r in results["rows"]
                        if r["impl"] == "triton"]
    assert report_moe.ours(results) == list(OURS) == ["triton"]
    assert all(c["impl"] == "triton" for c in report_moe.targets(results))
    md = report_moe.render_markdown(results)
    assert "fused" not in md and "## Headline" in md


def test_report_files_and_render_cli(tmp_path):
    results = _synthetic_results()
    paths = report_moe.write_report(results, str(tmp_path / "a"))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["latency_vs_B.png", "latency_vs_T.png", "report.md", "results.json", "x_floor_vs_B.png"]
    md = (tmp_path / "a" / "report.md").read_text()
    assert "## Headline: qwen3-30b-a3b layer, skewed routing, batch 16" in md
    assert "| k0=3 |" in md and "torch._grouped_mm" in md
    for png in ("latency_vs_T.png", "latency_vs_B.png", "x_floor_vs_B.png"):
        assert (tmp_path / "a" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["fits"]["qwen3-30b-a3b"]["moe"]["us_per_expert"] == pytest.approx(2.5)
    assert main(["bench", "moe", "--render", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.md").read_text() == md


def test_cli_errors(tmp_path, capsys):
    assert main(["bench", "moe", "--render", str(tmp_path / "none.json")]) == 2
    assert "--render results" in capsys.readouterr().err
    torch.save(torch.zeros(1, 4, 16), tmp_path / "e16.pt")
    assert main(["bench", "moe", "--trace", str(tmp_path / "e16.pt")]) == 2
    assert "has 16 experts per row but preset qwen3-30b-a3b has 128" in capsys.readouterr().err
    assert main(["bench", "tune", "--preset-batch", "qwen3-30b=1,2"]) == 2
    assert "--preset-batch takes PRESET=B,B with PRESET one of qwen3-30b-a3b" in capsys.readouterr().err
    assert main(["bench", "tune", "--preset-batch", "qwen3-30b-a3b=1,0"]) == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    for bad in ("skewed", "skewed:0", "trace:3", "uniform:top"):
        assert main(["bench", "tune", "--objective", "uniform:vanilla", bad]) == 2
        assert f"--objective takes MODE:K0 with MODE uniform or skewed and K0 a positive k0 or 'vanilla', got " \
               f"{bad!r}" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "moe", "--preset", "qwen3-30b-a3b"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
        assert main(["bench", "tune", "--preset", "qwen3-30b-a3b", "--batch", "16"]) == 2
        assert "oea-trt bench tune needs a CUDA GPU" in capsys.readouterr().err


# ---- the per-preset flow on a tiny layer ---------------------------------------------------------


@pytest.mark.slow
def test_bench_preset_flow_on_cpu(monkeypatch):
    """Everything bench_preset does but graph timing: correctness of every impl, routing per
    variant, rows, ratios, the configs our kernel ran with. The injected timer runs the work
    once and reports 1 us per call."""
    pytest.importorskip("triton")

    def fake_graph(work, calls=1, repeats=5, replays=3):
        work()
        return _t(1.0)

    def fake_eager(work, calls=1, repeats=5, iters=2, warmup=1):
        work()
        return _t(3.0)

    monkeypatch.setattr(moe_timing, "time_in_graph", fake_graph)
    monkeypatch.setattr(moe_bench, "time_eager", fake_eager)
    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    spec = moe_bench.MoEBenchSpec(batch_sizes=(4,), k0s=(2,), copies=2, routing="reference",
                                  loop_batches=(4,), baseline_k0s=(2,), device="cpu", dtype=str(DTYPE).split(".")[1])
    with interpreter_numpy_fix():
        info, rows = moe_bench.bench_preset(shape, spec, pick_router("reference"), BW)
    assert set(info["correctness"]) == {"triton", "grouped_mm"}
    assert all(entry["ok"] for entry in info["correctness"].values()), info["correctness"]
    assert info["kernel_configs"]["source"].startswith("heuristic default")
    assert info["kernel_configs"]["by_batch"]["4"]["down"] == "one_launch" and info["launches"] == {"triton": [1]}
    assert not [r for r in rows if r["impl"] == "error"], rows
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


# ---- the tuner ---------------------------------------------------------------------------------


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
    best, us = tune.coordinate_search("default", steps, measure, margin=0.01, rounds=1)
    assert (best, us) == ("deep+pdl", 95.0)
    assert measured == ["default", "wide", "deep", "deep+slots", "deep+pdl"]
    best, us = tune.coordinate_search("default", [[lambda c: "wide"]], measure, margin=0.01)
    assert (best, us) == ("default", 100.0)
    assert tune.coordinate_search("default", [[lambda c: "wide"]], measure, margin=0.0) == ("wide", 99.5)


def test_coordinate_search_runs_the_steps_again_after_a_change_and_measures_nothing_twice():
    """A down-path change (step 2) that makes a gate/up tile of step 1 win: the second round
    finds it. Round 2 proposes round-1 configs again (the "off" change returns a config timed
    in round 1): they are not timed twice. A round that changes nothing ends the search before
    `rounds` is used up."""
    times = {"a": 100.0, "a+narrow": 101.0, "a+wide": 100.5, "a+pre": 95.0, "a+pre+narrow": 96.0, "a+pre+wide": 90.0}
    measured = []

    def measure(cfg):
        measured.append(cfg)
        return times[cfg]

    def tiles(c):
        return c.split("+wide")[0].split("+narrow")[0]

    gate_up = [lambda c: tiles(c) + "+narrow", lambda c: tiles(c) + "+wide"]
    down = [lambda c: c if "+pre" in c else c.replace("a", "a+pre", 1),
            lambda c: c.replace("+pre", "")]  # back to round 1's configs: memoized
    assert tune.coordinate_search("a", [gate_up, down], measure, margin=0.01) == ("a+pre+wide", 90.0)
    assert measured == ["a", "a+narrow", "a+wide", "a+pre", "a+pre+narrow", "a+pre+wide"]
    measured.clear()
    assert tune.coordinate_search("a", [gate_up, down], measure, margin=0.01, rounds=1) == ("a+pre", 95.0)
    assert measured == ["a", "a+narrow", "a+wide", "a+pre"]
    # rounds=5: round 2 moves the best, round 3 changes nothing, rounds 4-5 never run
    calls = []
    counting = [lambda c: calls.append(c) or tiles(c) + "+wide"]
    measured.clear()
    assert tune.coordinate_search("a", [counting, down], measure, margin=0.01, rounds=5) == ("a+pre+wide", 90.0)
    assert len(calls) == 3 and measured == ["a", "a+wide", "a+pre", "a+pre+wide"]


def test_tuner_steps_try_the_handoff_on_three_launches_only():
    """Each three-launch down candidate names its hand-off (on with streamed tiles, off with
    preloaded ones, as measured); the hand-off step toggles it on a three-launch config and
    leaves a one-launch config as it is (the search then skips it: nothing to time)."""
    from oea_trt.moe.triton.config import KernelConfig, default_config

    gate_up, down, one_launch, handoff = tune.candidate_steps()
    start = default_config(4, 2048, 768, 8, 128)
    assert start.down == "one_launch" and not start.handoff
    moved = [change(start) for change in down]
    assert all(c.down == "slots" and c.handoff == (not c.dn_preload) for c in moved)
    assert {c.dn_preload for c in moved} == {True, False}
    assert [change(KernelConfig(down="slots", handoff=False)).handoff for change in handoff] == [True]
    assert [change(start) for change in handoff] == [start]
    assert default_config(32, 2048, 768, 8, 128).handoff and default_config(32, 2048, 768, 8, 128).down == "slots"


def test_cli_rounds_reach_the_tuner(monkeypatch, capsys):
    """--rounds (default TUNE_ROUNDS) is what the tuner's spec carries; 0 is refused."""
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tune, "run_tune", lambda spec: seen.append(spec) or {"presets": {}})
    assert main(["bench", "tune", "--preset", "qwen3-30b-a3b", "--batch", "1", "--rounds", "3"]) == 1
    assert main(["bench", "tune", "--preset", "qwen3-30b-a3b", "--batch", "1"]) == 1  # nothing written: exit 1
    assert [s.rounds for s in seen] == [3, tune.TUNE_ROUNDS] and tune.TUNE_ROUNDS == 2
    with pytest.raises(SystemExit) as refused:  # argparse's own error: message, exit 2
        main(["bench", "tune", "--rounds", "0"])
    assert refused.value.code == 2 and "--rounds: expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_searches_every_path_and_writes_files_the_library_reads(monkeypatch, tmp_path):
    """The whole tuning run on a tiny layer (interpreter; each candidate's work runs once): the
    search measures the three-launch and one-launch paths, the winner passes the reference
    check, and the files written to the output and install folders are what tuned_config reads
    for that GPU name and shape. The injected timer makes each measurement 2% faster than the
    one before, so every change that runs is kept and the last candidate wins."""
    pytest.importorskip("triton")
    from oea_trt.moe.tuned import config_path, read_tuned, tuned_config

    clock = iter(range(1000))

    def fake_graph(work, calls=1, repeats=5, replays=3):
        work()
        us = 100.0 * 0.98 ** next(clock)
        return Timing(us, us, us, [us])

    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    monkeypatch.setattr(moe_timing, "time_in_graph", fake_graph)
    monkeypatch.setattr(tune, "get_preset", lambda name: shape)
    spec = tune.TuneSpec(presets=("qwen3-30b-a3b",), batches=(2,), copies=1, output_dir=str(tmp_path / "out"),
                         install_dir=str(tmp_path / "pkg"), device="cpu", dtype=str(DTYPE).split(".")[1], rounds=1)
    with interpreter_numpy_fix():
        results = tune.run_tune(spec, device_name="Test GPU 1")
    entry = results["presets"]["qwen3-30b-a3b"]
    assert entry["timing"].startswith("MoE only: routed timing needs the routing kernel")  # no CUDA here
    tried = entry["batches"]["2"]["tried"]
    assert {cfg["down"] for cfg, _ in tried} == {"slots", "one_launch"}
    assert all(isinstance(us, float) for _, us in tried), tried
    assert len(tried) == 1 + len(tune.GATE_UP_CANDIDATES) + len(tune.DOWN_CANDIDATES) + len(
        tune.ONE_LAUNCH_CANDIDATES)
    best = entry["batches"]["2"]["best"]
    assert entry["batches"]["2"]["correct"] and best == tried[-1][0] and best["down"] == "one_launch"
    args = ("Test GPU 1", 8, 64, 32, 4, DTYPE)
    assert entry["file"] == config_path(*args, root=str(tmp_path / "out"))
    assert entry["installed"] == config_path(*args, root=str(tmp_path / "pkg"))
    for root in ("out", "pkg"):
        assert {b: c.to_dict() for b, c in read_tuned(config_path(*args, root=str(tmp_path / root))).items()} == {
            2: best}
        assert tuned_config(16, 8, 64, 32, 4, DTYPE, "Test GPU 1", root=str(tmp_path / root)).to_dict() == best
    saved = json.loads((tmp_path / "out" / "tune_results.json").read_text())
    assert saved["device_name"] == "Test GPU 1" and saved["presets"]["qwen3-30b-a3b"]["batches"]["2"]["best"] == best


def test_a_run_of_recorded_routing_only_reports_its_ratios():
    """A run with only the 'trace' routing (scripts/gpu/moe.sh's second part): our kernel is
    judged on its k0=3 row, and the report has the recorded-routing section, no headline."""
    results = _synthetic_results(fixed=3.0)
    results["rows"] = [dict(r, mode="trace") for r in results["rows"] if r["mode"] == "skewed"]
    results["spec"] = dict(results.get("spec", {}), modes=["trace"], trace_path="/x/router_traces.pt")
    assert report_moe.best_impl(results) == "triton"
    md = report_moe.render_markdown(results)
    assert "## Recorded routing: qwen3-30b-a3b layer fed the router logits of router_traces.pt, batch 16" in md
    assert "## Headline" not in md and f"(headline: {IMPLS['triton'].label})" in md


def test_report_has_x_floor_tables_per_batch():
    """Issue 20's form: per (preset, routing) a table of MoE-only us and time / floor per batch
    and routing variant, from the same rows the report's other tables use."""
    from oea_trt.bench.report_floor import floor_section

    results = _synthetic_results(fixed=1.0)
    md = report_moe.render_markdown(results)
    assert "## qwen3-30b-a3b, skewed routing: MoE only us (x floor), triton" in md
    row = next(r for r in results["rows"] if r["impl"] == "triton" and r["mode"] == "skewed" and r["batch"] == 16
               and r["preset"] == "qwen3-30b-a3b" and r["variant"] == "k0=3")
    cell = f"{row['moe_us']:.1f} ({row['moe_us'] / row['floor_us']:.2f})"
    lines = floor_section(results, "triton", "qwen3-30b-a3b", "skewed", ["vanilla", "k0=3"])
    assert any(line.startswith("| 16 |") and cell in line for line in lines[-1].splitlines())
    assert floor_section(results, "triton", "no-such-preset", "skewed", ["vanilla"]) == []


def test_x_floor_plot_draws_time_over_floor_per_variant_with_the_targets(monkeypatch, tmp_path):
    """x_floor_vs_B.png: one panel per (preset, routing), a line per routing variant (not the
    drift check's vanilla#2) whose points are MoE us / floor us per batch, the targets dashed."""
    from oea_trt.bench import report
    from oea_trt.bench.report_floor import FLOOR_TARGETS, plot_x_floor

    results = _synthetic_results(fixed=1.0)
    results["rows"] += [dict(r, variant="vanilla#2") for r in results["rows"] if r["variant"] == "vanilla"]
    drawn = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: drawn.append(
        {ax.get_title(): {ln.get_label(): list(zip(*ln.get_data())) for ln in ax.get_lines()} for ax in fig.axes}))
    assert plot_x_floor(results, "triton", str(tmp_path / "x.png"))
    rows = [r for r in results["rows"] if r["impl"] == "triton" and r.get("moe_us") and r.get("floor_us")]
    assert set(drawn[0]) == {f"{r['preset']}, {r['mode']} routing" for r in rows}
    panel = drawn[0]["qwen3-30b-a3b, skewed routing"]
    assert "vanilla#2" not in panel
    want = sorted((r["batch"], r["moe_us"] / r["floor_us"]) for r in rows if r["preset"] == "qwen3-30b-a3b"
                  and r["mode"] == "skewed" and r["variant"] == "k0=3")
    assert [(b, pytest.approx(x)) for b, x in want] == panel["k0=3"]
    assert panel["target k0=3 (B >= 4)"][0][1] == FLOOR_TARGETS["k0=3"]
    assert not plot_x_floor(results, "grouped_mm_none", str(tmp_path / "y.png"))


def test_tune_objective_sums_the_routings_it_names(monkeypatch):
    """An objective of two routings (uniform vanilla + skewed OEA k0=2) times every candidate on
    both and sums them: twice the timed graphs of the default objective, the same search."""
    from oea_trt.moe import ExpertWeights

    timed = []

    def fake_graph(work, calls=1, repeats=5, replays=3):
        timed.append(work)
        return Timing(10.0, 10.0, 10.0, [10.0])

    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    monkeypatch.setattr(moe_timing, "time_in_graph", fake_graph)
    weights = [ExpertWeights.random(shape, seed=0, dtype=DTYPE, device="cpu")]
    results = {}
    for objective in ((("uniform", None),), (("uniform", None), ("skewed", 2))):
        timed.clear()
        spec = tune.TuneSpec(copies=1, device="cpu", dtype=str(DTYPE).split(".")[1], objective=objective,
                             timing="moe")
        with interpreter_numpy_fix():
            best, us, tried = tune.tune_batch(shape, weights, 2, spec)
        results[len(objective)] = (len(timed), us, len(tried))
    assert results[2][0] == 2 * results[1][0] and results[2][2] == results[1][2]
    assert results[1][1] == 10.0 and results[2][1] == 20.0


def test_routed_tuning_routes_every_call_inside_the_timed_graph(monkeypatch):
    """timing "routed": every timed graph routes each copy's logits with the router it is given
    (with the early active-set signal, as a served model routes) before that copy's MoE call,
    with the objective's routing config; without a router the graph runs the MoE alone."""
    from oea_trt.bench.routers import Router
    from oea_trt.moe import ExpertWeights
    from oea_trt.routing.reference import oea_route

    routed = []

    def route(logits, config, signal=False):
        routed.append((int(logits.shape[0]), config.k0, signal))
        return oea_route(logits, config)

    timed = []

    def fake_graph(work, calls=1, repeats=5, replays=3):
        before = len(routed)
        work()
        timed.append(len(routed) - before)
        return Timing(10.0, 10.0, 10.0, [10.0])

    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=64, moe_intermediate_size=32, num_moe_layers=1)
    monkeypatch.setattr(moe_timing, "time_in_graph", fake_graph)
    weights = [ExpertWeights.random(shape, seed=c, dtype=DTYPE, device="cpu") for c in range(2)]
    spec = tune.TuneSpec(copies=2, device="cpu", dtype=str(DTYPE).split(".")[1], objective=(("skewed", 2),))
    with interpreter_numpy_fix():
        tune.tune_batch(shape, weights, 3, spec, Router("kernel", route, "test"))
        assert timed and all(n == 2 for n in timed), timed
        assert set(routed) == {(3, 2, True)}
        timed.clear()
        tune.tune_batch(shape, weights, 3, spec, None)
    assert timed and all(n == 0 for n in timed)


def test_routed_timing_needs_the_routing_kernel_and_says_when_it_falls_back(monkeypatch):
    from oea_trt.bench.routers import Router

    spec = tune.TuneSpec(device="cpu")
    assert spec.timing == "routed" and tune.timing_router(tune.TuneSpec(timing="moe"))[0] is None
    monkeypatch.setattr(tune, "pick_router", lambda choice, device: Router("reference", None, "no kernel: why"))
    router, words = tune.timing_router(spec)
    assert router is None and "MoE only" in words and "no kernel: why" in words
    kernel = Router("kernel", None, "the kernel")
    monkeypatch.setattr(tune, "pick_router", lambda choice, device: kernel)
    assert tune.timing_router(spec) == (kernel, "routing+MoE (the fused routing kernel in the graph)")
    with pytest.raises(ValueError, match="timing must be one of"):
        tune.timing_router(tune.TuneSpec(timing="both"))
