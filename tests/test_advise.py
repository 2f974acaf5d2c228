"""oea_trt.advise: latency models, quality tables, the search and the plan it expresses (no model)."""
import json
import os

import numpy as np
import pytest

from oea_trt.advise import latency as latency_mod
from oea_trt.advise import search as search_mod
from oea_trt.advise.latency import LatencyModel, LinearFit, benchmark_model, derive_fits, floor_model, package_fits
from oea_trt.advise.outputs import build_flags, routing_plan
from oea_trt.advise.quality import QualityTable, additivity
from oea_trt.advise.predict import Predictor
from oea_trt.advise.search import advise, solve_per_layer
from oea_trt.moe.shapes import get_preset
from oea_trt.plan.hf_config import qwen3_moe_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(ROOT, "oea_trt", "models", "embedded")


def synthetic_results(rng, layers=3, batches=(4, 16, 64), top_k=8, sequences=32, sensitivity=None):
    """An eval results dict whose all-layer rows are the per-sequence sums of the single-layer
    ones (effects add exactly), with T falling in k0 and growing with B."""
    k0s = list(range(1, top_k))
    sensitivity = np.asarray(sensitivity if sensitivity is not None else rng.uniform(0.2, 3.0, layers))
    van_t = {b: [float(128 * (1 - (1 - 8 / 128) ** (b * 0.7)) + rng.uniform(-1, 1)) for _ in range(layers)]
             for b in batches}
    rows, layer_rows = [], []
    for b in batches:
        rows.append({"routing": "vanilla", "batch": b, "k0": top_k, "delta_ce": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                     "active_experts_per_layer": van_t[b]})
        for k in k0s:
            per_seq, ts = np.zeros(sequences), []
            for i in range(layers):
                mean = sensitivity[i] * 0.02 * (top_k - k) ** 2 / top_k ** 2 / np.sqrt(b)
                seq = mean + 0.3 * mean * rng.standard_normal(sequences)
                seq += mean - seq.mean()  # exact mean
                t = van_t[b][i] * (0.35 + 0.65 * k / top_k)
                per_seq += seq
                ts.append(t)
                layer_rows.append({"layer": i, "batch": b, "k0": k, "delta_ce": float(seq.mean()),
                                   "ci_low": float(seq.mean() - 0.01), "ci_high": float(seq.mean() + 0.01),
                                   "active_experts": t, "vanilla_active_experts": van_t[b][i],
                                   "sequence_delta_ce": seq.tolist()})
            half = 1.96 * per_seq.std(ddof=1) / np.sqrt(sequences)
            rows.append({"routing": "oea", "batch": b, "k0": k, "delta_ce": float(per_seq.mean()),
                         "ci_low": float(per_seq.mean() - half), "ci_high": float(per_seq.mean() + half),
                         "active_experts_per_layer": ts})
    return {"model": "embedded", "top_k": top_k, "sequences": sequences, "length": 16, "seed": 1,
            "oea_options": {}, "rows": rows, "layer_sensitivity": layer_rows}


def linear_latency(us_per_expert=3.0, fixed=15.0):
    return LatencyModel("test", LinearFit(us_per_expert, fixed))


@pytest.fixture
def table():
    return QualityTable.from_results(synthetic_results(np.random.default_rng(0)))


def _close(a, b) -> bool:
    """Equal JSON values, floats to 1e-9 relative (least squares may differ in the last bits)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=1e-9, abs=1e-12)
    return a == b


# ---- latency -------------------------------------------------------------------------------

def test_package_fits_are_the_committed_benchmark_runs_refitted():
    """latency_fits.json is derived data: re-deriving it from the committed results gives it back,
    and its overall fits are the ones the MoE benchmark report printed for those runs."""
    shipped = {(e["gpu"], e["preset"]): e for e in package_fits()}
    assert {("h100", "qwen3-30b-a3b"), ("h200", "qwen3-30b-a3b")} <= set(shipped)
    for source in latency_mod.FIT_SOURCES:
        with open(os.path.join(ROOT, source)) as f:
            results = json.load(f)
        for entry in derive_fits(results, source):
            assert _close(json.loads(json.dumps(entry)), shipped[(entry["gpu"], entry["preset"])])
            report = results["fits"][entry["preset"]]["total"]
            assert entry["overall"]["us_per_expert"] == pytest.approx(report["us_per_expert"], rel=1e-9)
            assert entry["overall"]["fixed_us"] == pytest.approx(report["fixed_us"], rel=1e-9)
            for b, fit in entry["by_batch"].items():
                rows = [r for r in results["rows"] if r["preset"] == entry["preset"] and r["batch"] == int(b)
                        and r["impl"] == entry["kernel"] and r["variant"] != "vanilla#2" and r.get("moe_us")]
                slope, intercept = np.polyfit([r["T"] for r in rows], [r["total_us"] for r in rows], 1)
                assert fit["us_per_expert"] == pytest.approx(slope) and fit["fixed_us"] == pytest.approx(intercept)


def test_latency_uses_the_nearest_measured_batch_size():
    model = LatencyModel("t", LinearFit(1.0, 0.0), {4: LinearFit(2.0, 1.0), 16: LinearFit(3.0, 2.0)})
    assert model.layer_us(4, 10) == 21.0
    assert model.layer_us(7, 10) == 21.0      # log2 7 is nearer 4 than 16
    assert model.layer_us(9, 10) == 32.0      # ... and 9 nearer 16
    assert model.layer_us(1000, 10) == 32.0
    assert LatencyModel("t", LinearFit(1.0, 5.0)).layer_us(16, 10) == 15.0


def test_h100_fit_predicts_the_benchmark_headline_row():
    """30B layer, skewed B=16, k0=3: measured 87.7 us at T 24.5 (moe_h100/report.md)."""
    model = benchmark_model("h100", "qwen3-30b-a3b")
    assert model.layer_us(16, 24.5) == pytest.approx(87.7, rel=0.03)
    assert "15ae6fa" in model.description


def test_floor_model_is_simulates_floor():
    shape = get_preset("qwen3-30b-a3b")
    model = floor_model(shape, 3.0)
    assert model.layer_us(16, 40.0) == pytest.approx(shape.floor_us(40.0, 3.0))
    with pytest.raises(ValueError, match="positive"):
        floor_model(shape, 0.0)


def test_unknown_fit_names_what_exists():
    with pytest.raises(ValueError, match="h100/qwen3-30b-a3b"):
        benchmark_model("a100", "qwen3-30b-a3b")


# ---- quality table ---------------------------------------------------------------------------

def test_quality_table_reads_eval_rows(table):
    assert table.top_k == 8 and table.batches == (4, 16, 64) and table.k0s == tuple(range(1, 9))
    assert table.layers == (0, 1, 2) and table.has_layers
    assert table.uniform[(16, 8)].delta_ce == 0.0
    assert table.layer_effect(1, 16, 8).delta_ce == 0.0  # vanilla in that layer costs nothing
    assert np.all(table.layer_effect(1, 16, 8).sequence_delta_ce == 0)


def test_additivity_is_one_when_effects_add(table):
    ratios = [r["ratio"] for r in additivity(table)]
    assert len(ratios) == 3 * 7 and ratios == pytest.approx([1.0] * 21)


def test_incomplete_layer_sensitivity_is_refused():
    payload = synthetic_results(np.random.default_rng(1))
    payload["layer_sensitivity"] = [r for r in payload["layer_sensitivity"] if r["layer"] != 2]
    with pytest.raises(ValueError, match="covers layers \\[0, 1\\] but the model has 3 MoE layers"):
        QualityTable.from_results(payload, "x.json")
    payload = synthetic_results(np.random.default_rng(1))
    payload["layer_sensitivity"] = [r for r in payload["layer_sensitivity"] if (r["batch"], r["k0"]) != (16, 3)]
    with pytest.raises(ValueError, match="no row for layer 0, B=16, k0=3"):
        QualityTable.from_results(payload, "x.json")
    payload = synthetic_results(np.random.default_rng(1))
    payload["oea_options"] = {"max_rank": 16}
    with pytest.raises(ValueError, match="max_rank"):
        QualityTable.from_results(payload, "x.json")


# ---- the search ------------------------------------------------------------------------------

def _brute_force(table, latency, batches, budgets, weights):
    """Per-layer k0 vectors shared by `batches`, by plain loops over every vector."""
    import itertools

    best = None
    for v in itertools.product(table.k0s, repeat=len(table.layers)):
        cost, ok = 0.0, True
        for b in batches:
            if len(set(v)) == 1:
                e = table.uniform[(b, v[0])]
                dce, ts = e.delta_ce, list(e.active_experts)
            else:
                dce = sum(table.layer_effect(layer, b, k).delta_ce for layer, k in zip(table.layers, v))
                ts = [table.layer_effect(layer, b, k).active_experts for layer, k in zip(table.layers, v)]
            ok &= dce <= budgets[b]
            cost += weights[b] * np.mean([latency.layer_us(b, t) for t in ts])
        if ok and (best is None or cost < best[0] - 1e-12):
            best = (cost, v)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_search_finds_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    table = QualityTable.from_results(synthetic_results(rng))
    latency = linear_latency()
    batches = (4, 16)
    budgets = {4: float(rng.uniform(0.001, 0.01)), 16: float(rng.uniform(0.001, 0.01))}
    weights = {4: 0.3, 16: 0.7}
    vector, how = solve_per_layer({b: Predictor(table, latency, b) for b in batches}, weights, budgets, "mean")
    assert how.startswith("exhaustive over 512")
    cost, want = _brute_force(table, latency, batches, budgets, weights)
    got = sum(weights[b] * Predictor(table, latency, b).vector(vector).layer_us for b in batches)
    assert got == pytest.approx(cost, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batches", [(16,), (4, 16)])
def test_knapsack_and_local_search_reach_the_optimum(seed, batches, monkeypatch):
    """Past EXHAUSTIVE_LIMIT vectors the search is a knapsack over layers plus local search: on
    5-layer problems (8^5 vectors, enumerable) it must find the optimum, feasible."""
    rng = np.random.default_rng(seed)
    table = QualityTable.from_results(synthetic_results(rng, layers=5))
    latency = linear_latency()
    budgets = {b: float(rng.uniform(0.002, 0.008)) for b in batches}
    weights = {b: 1.0 / len(batches) for b in batches}
    predictors = {b: Predictor(table, latency, b) for b in batches}
    monkeypatch.setattr(search_mod, "EXHAUSTIVE_LIMIT", 10)
    vector, how = solve_per_layer(predictors, weights, budgets, "mean")
    assert how.startswith("knapsack")
    monkeypatch.setattr(search_mod, "EXHAUSTIVE_LIMIT", 10 ** 6)
    best, how = solve_per_layer(predictors, weights, budgets, "mean")
    assert how.startswith("exhaustive")
    cost = lambda v: sum(weights[b] * predictors[b].vector(v).layer_us for b in batches)  # noqa: E731
    for b in batches:
        assert predictors[b].vector(vector).delta_ce <= budgets[b]
    assert cost(vector) <= cost(best) * 1.005
    assert cost(vector) <= min(cost((k,) * 5) for k in table.k0s
                               if all(predictors[b].uniform(k).delta_ce <= budgets[b] for b in batches)) + 1e-9


def test_many_layers_are_searched_quickly():
    table = QualityTable.from_results(synthetic_results(np.random.default_rng(5), layers=48, sequences=16))
    import time

    start = time.perf_counter()
    a = advise(table, linear_latency(), {16: 0.005, 64: 0.005}, {16: 0.5, 64: 0.5})
    assert time.perf_counter() - start < 30
    assert a.search.startswith("knapsack")
    assert all(a.choices[b].delta_ce <= 0.005 for b in (16, 64))
    assert a.expected_us("choices") < a.expected_us("best_uniform")


def test_a_tolerant_layer_takes_the_lowest_k0():
    """Layer 0 costs almost nothing at any k0, layers 1 and 2 a lot: within a budget that one
    k0 for all layers cannot use, per-layer k0 cuts layer 0 alone."""
    table = QualityTable.from_results(synthetic_results(np.random.default_rng(2), sensitivity=[1e-4, 5.0, 5.0]))
    latency = linear_latency()
    budget = table.layer_effect(1, 16, 7).delta_ce * 0.5  # below what k0=7 costs in layer 1 alone
    a = advise(table, latency, {16: budget}, {16: 1.0})
    assert a.best_uniform[16].k0_by_layer == (8, 8, 8)
    assert a.choices[16].k0_by_layer == (1, 8, 8)
    assert a.choices[16].mean_active_experts < a.best_uniform[16].mean_active_experts
    assert a.layer_k0 == {0: 1} and a.base_k0 == 8 and a.per_layer_batches == (16,)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bound", ["mean", "upper"])
def test_advice_holds_the_budget_beats_one_k0_and_is_what_a_build_routes(seed, bound):
    rng = np.random.default_rng(seed)
    table = QualityTable.from_results(synthetic_results(rng))
    latency = benchmark_model("h100", "qwen3-30b-a3b")
    batches = sorted(rng.choice([4, 16, 64], size=int(rng.integers(1, 4)), replace=False).tolist())
    budgets = {b: float(rng.uniform(0.0, 0.01)) for b in batches}
    weights = {b: float(w) for b, w in zip(batches, rng.dirichlet(np.ones(len(batches))))}
    a = advise(table, latency, budgets, weights, bound=bound)
    for b in batches:
        assert a.choices[b].bound(bound) <= budgets[b] + 1e-15
        assert a.best_uniform[b].bound(bound) <= budgets[b] + 1e-15
    assert a.expected_us("choices") <= a.expected_us("best_uniform") + 1e-9
    assert a.expected_us("best_uniform") <= a.expected_us("vanilla") + 1e-9
    # the flags' plan routes every advised batch size with exactly the advised k0 per layer
    plan = routing_plan(a, qwen3_moe_spec(EMBEDDED))
    for b in batches:
        routed = tuple(plan.config_for_layer(layer).k0_for(b) for layer in plan.moe_layers)
        assert routed == a.choices[b].k0_by_layer, (b, a.schedule, a.layer_k0)
    # below the smallest batch size that matters a plan without per-layer k0 stays vanilla
    if not a.per_layer_batches and batches[0] > 1:
        assert all(plan.config_for_layer(layer).k0_for(batches[0] - 1) == 8 for layer in plan.moe_layers)


def test_budget_zero_is_vanilla_and_a_huge_budget_the_fewest_experts(table):
    latency = linear_latency()
    zero = advise(table, latency, {4: 0.0, 64: 0.0}, {4: 0.5, 64: 0.5})
    assert all(c.k0_by_layer == (8, 8, 8) for c in zero.choices.values())
    assert build_flags(zero, "x.json") == ["--k0", "8"]
    huge = advise(table, latency, {4: 10.0, 64: 10.0}, {4: 0.5, 64: 0.5})
    assert all(c.k0_by_layer == (1, 1, 1) for c in huge.choices.values())
    assert huge.schedule == ((4, 1),) and build_flags(huge, "x.json") == ["--k0", "8", "--k0-schedule", "4:1"]


def test_uniform_only_without_layer_sensitivity():
    payload = synthetic_results(np.random.default_rng(3))
    del payload["layer_sensitivity"]
    t = QualityTable.from_results(payload)
    a = advise(t, linear_latency(), {16: 0.003}, {16: 1.0})
    assert not a.layer_k0 and a.choices[16] == a.best_uniform[16]
    assert any("--layer-sensitivity" in n for n in a.notes)


@pytest.mark.parametrize("weights, budgets, message", [
    ({32: 1.0}, {32: 0.01}, "batch size\\(s\\) \\[32\\] were not evaluated"),
    ({16: 1.0}, {}, "no quality budget for B=16"),
    ({16: 1.0}, {16: -0.1}, "must be >= 0"),
    ({16: 0.0}, {16: 0.1}, "weight of B=16 must be positive"),
])
def test_bad_search_inputs(table, weights, budgets, message):
    with pytest.raises(ValueError, match=message):
        advise(table, linear_latency(), budgets, weights)


def test_calibrated_sums_scale_by_how_much_all_layer_rows_exceed_their_sums():
    """All-layer rows 1.5x the sum of their layers (effects compound): a mixed vector is
    predicted at 1.5x its plain sum; "plain" keeps the sum."""
    payload = synthetic_results(np.random.default_rng(4))
    for r in payload["rows"]:
        if r["routing"] == "oea":
            r["delta_ce"], r["ci_low"], r["ci_high"] = (1.5 * r[key] for key in ("delta_ce", "ci_low", "ci_high"))
    table = QualityTable.from_results(payload)
    assert [r["factor"] for r in additivity(table)] == pytest.approx([1.5] * 21)
    latency = linear_latency()
    plain = Predictor(table, latency, 16, "plain").vector((3, 5, 4))
    calibrated = Predictor(table, latency, 16).vector((3, 5, 4))
    want = sum(table.layer_effect(i, 16, k).delta_ce for i, k in enumerate((3, 5, 4)))
    assert plain.delta_ce == pytest.approx(want) and calibrated.delta_ce == pytest.approx(1.5 * want)
    assert calibrated.ci_high - calibrated.ci_low == pytest.approx(1.5 * (plain.ci_high - plain.ci_low))
    assert Predictor(table, latency, 16).vector((4, 4, 4)) == Predictor(table, latency, 16, "plain").uniform(4)
    with pytest.raises(ValueError, match="additivity must be one of calibrated, plain"):
        Predictor(table, latency, 16, "sum")


def test_a_per_layer_plan_must_save_at_least_min_gain():
    table = QualityTable.from_results(synthetic_results(np.random.default_rng(2), sensitivity=[1e-4, 5.0, 5.0]))
    budget = table.layer_effect(1, 16, 7).delta_ce * 0.5
    a = advise(table, linear_latency(), {16: budget}, {16: 1.0})
    gain = 1 - a.expected_us("choices") / a.expected_us("best_uniform")
    assert a.layer_k0 and gain > 0
    kept = advise(table, linear_latency(), {16: budget}, {16: 1.0}, min_gain=gain * 1.01)
    assert not kept.layer_k0 and kept.choices[16] == kept.best_uniform[16]
    assert any("less than min_gain" in n for n in kept.notes)


def test_a_bench_results_file_gives_the_same_model_as_the_package_data():
    path = os.path.join(ROOT, "benchmarks", "results", "moe_h100", "results.json")
    own = latency_mod.from_bench_results(path, "qwen3-235b-a22b-tp8")
    shipped = benchmark_model("h100", "qwen3-235b-a22b-tp8")
    for b in (1, 4, 16, 64, 100):
        assert own.layer_us(b, 30.0) == pytest.approx(shipped.layer_us(b, 30.0))
    with pytest.raises(ValueError, match="no timed rows for layer shape 'qwen3-235b-a22b'"):
        latency_mod.from_bench_results(os.path.join(ROOT, "benchmarks", "results", "moe_h100_trace", "trace_only",
                                                     "results.json"), "qwen3-235b-a22b")
