"""`oea-trt bench decode` runs end to end: a CPU smoke run of the benchmark on a tiny shape
(eager steps, host timers) fills every row the spec asks for with consistent figures, and
the report renders from its results.json through the CLI."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the benchmark's baselines run transformers")

from oea_trt.bench.decode import DecodeBenchSpec, routings, run_decode_benchmark  # noqa: E402
from oea_trt.bench.report_decode import render_markdown, targets  # noqa: E402
from oea_trt.cli import main  # noqa: E402
from oea_trt.decode import ModelShape, shape as shape_module  # noqa: E402

TINY = ModelShape(vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                  moe_intermediate_size=16, num_experts=16, top_k=4)


@pytest.fixture(scope="module")
def results():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(shape_module.SHAPES, "tiny-test", TINY)
        spec = DecodeBenchSpec(shape="tiny-test", batch_sizes=(1, 4), k0s=(2,), prompt_length=6, steps=2, repeats=2,
                               warmup=1, hf=("eager", "oea"), hf_batches=(4,), hf_focus_batch=4, hf_steps=2,
                               device="cpu")
        torch.manual_seed(0)
        return run_decode_benchmark(spec)


def test_every_row_is_there_and_consistent(results):
    names = [n for n, _ in routings(TINY, (2,))]
    assert names == ["vanilla", "k0=2"]
    keys = {(r["routers"], r["batch"], r["routing"]) for r in results["rows"]}
    assert keys == {(kind, b, n) for kind in ("skewed", "uniform") for b in (1, 4) for n in names}
    for row in results["rows"]:
        assert row["tpot_ms"] > 0 and len(row["samples_ms"]) == 2
        assert row["tokens_per_s"] == pytest.approx(row["batch"] / row["tpot_ms"] * 1e3)
        assert len(row["active_per_layer"]) == 2 and 1 <= row["active_mean"] <= 16
        k_per_token = 4 if row["routing"] == "vanilla" else 2
        assert row["active_max_layer"] <= min(16, row["batch"] * 4)
        if row["batch"] == 1:  # one token holds k0 experts, vanilla k
            assert row["active_mean"] == k_per_token
        assert row["moe_ms"] > 0 and row["floor_ms"] > 0
    assert all(check["active_equal"] and check["logits_rel_diff"] == 0 for check in results["checks"])
    hf = {(r["routers"], r["mode"]) for r in results["hf_rows"] if "tpot_ms" in r}
    assert hf == {(kind, mode) for kind in ("skewed", "uniform") for mode in ("eager", "oea")}


def test_report_and_cli_render(results, tmp_path):
    checks = targets(results)
    assert [c["check"].split(":")[0] for c in checks][:2] == ["skewed B=4", "skewed B=4"]
    text = render_markdown(results)
    assert "## skewed routers" in text and "## uniform routers" in text and "transformers baselines" in text
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert main(["bench", "decode", "--render", str(path), "--out", str(tmp_path / "out")]) == 0
    for name in ("results.json", "report.md", "tpot_vs_batch.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
