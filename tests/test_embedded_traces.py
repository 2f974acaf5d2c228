"""The embedded model's recorded router logits (oea_trt/models/embedded/router_traces.pt): what
`oea-trt bench moe` times as its "trace" routing by default. They must load as the benchmark
reads them, form decode batches of distinct sequences, and be what the embedded model records."""
import pytest
import torch

from oea_trt import OEAConfig, oea_route
from oea_trt.bench.routing_inputs import TraceSource, load_trace
from oea_trt.cli import build_parser
from oea_trt.cli.commands.bench import moe_spec
from oea_trt.cli import CLIError
from oea_trt.models.embedded import ROUTER_TRACES


def test_traces_load_as_the_benchmark_reads_them():
    source = TraceSource(ROUTER_TRACES, 128)
    assert (source.num_layers, source.num_tokens) == (3, 64 * 32) and source.sequence_shape == (64, 32)
    assert torch.isfinite(source.logits).all()
    draw = source.draw(64, seed=5)  # B=64, the benchmark's largest batch: all 64 sequences
    assert draw.shape == (64, 128) and draw.dtype == torch.float32
    assert torch.equal(draw, source.draw(64, seed=5))
    # A decode batch of 16: 16 different sequences at one position, i.e. 16 distinct rows.
    b16 = source.draw(16, seed=11)
    assert len({tuple(row.tolist()) for row in b16}) == 16


def test_traces_route_like_the_embedded_model_documents():
    """TRAINING.md: vanilla touches 66.1 experts per B=16 decode batch, OEA k0=3 30.7 (means over
    every batch and layer of the file): the same file gives the same means."""
    logits = load_trace(ROUTER_TRACES).view(3, 64, 32, 128)
    t = {None: [], 3: []}
    for layer in range(3):
        for start in range(0, 64, 16):
            for pos in range(32):
                batch = logits[layer, start:start + 16, pos]
                t[None].append(int(oea_route(batch, OEAConfig.vanilla(128, 8)).num_active))
                t[3].append(int(oea_route(batch, OEAConfig(128, 8, 3)).num_active))
    assert sum(t[None]) / len(t[None]) == pytest.approx(66.1, abs=0.05)
    assert sum(t[3]) / len(t[3]) == pytest.approx(30.7, abs=0.05)


@pytest.mark.slow
def test_traces_are_what_the_embedded_model_records(tmp_path):
    """Re-record with TRAINING.md's settings (64 held-out sequences of 32 tokens, all domains) and
    compare (float32 CPU forward passes: equal up to summation order)."""
    pytest.importorskip("transformers")
    from oea_trt.data import EVAL_SEED, domain_names
    from oea_trt.eval import dump_traces, eval_sequences, load_model

    model, tokenizer = load_model(device="cpu", dtype="float32")
    ids, domains = eval_sequences(tokenizer, 64, 32, EVAL_SEED, domain_names(None))
    dump_traces(model, ids, str(tmp_path / "t.pt"), domains, source="embedded")
    fresh, stored = load_trace(str(tmp_path / "t.pt")), load_trace(ROUTER_TRACES)
    assert fresh.shape == stored.shape
    torch.testing.assert_close(fresh, stored, rtol=1e-4, atol=1e-4)


def _spec(*argv):
    args = build_parser().parse_args(["bench", "moe", *argv])
    return moe_spec(args)


def test_bench_moe_times_the_embedded_traces_by_default(tmp_path):
    spec = _spec()
    assert spec.modes == ("uniform", "skewed", "trace") and spec.trace_path == ROUTER_TRACES
    spec = _spec("--routing", "uniform", "skewed")
    assert spec.modes == ("uniform", "skewed") and spec.trace_path is None
    other = tmp_path / "mine.pt"
    torch.save(torch.randn(2, 80, 128), other)
    spec = _spec("--routing", "skewed", "--trace", str(other))
    assert spec.modes == ("skewed", "trace") and spec.trace_path == str(other)


def test_bench_moe_batch_beyond_the_traces_sequences_is_a_clear_error():
    with pytest.raises(CLIError, match="has 64 sequences; --batch 128 needs as many"):
        _spec("--batch", "16", "128")
    _spec("--batch", "64", "--routing", "uniform")  # no trace: any batch
    _spec("--batch", "128", "--routing", "uniform")
