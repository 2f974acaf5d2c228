"""The plugin's enqueue on a GPU, against the Python reference (no TensorRT needed).

tests/plugin_harness.py dlopens liboea_routing_trt.so, takes the creator from getCreators,
creates the plugin from fields, and calls onShapeChange + enqueue on torch CUDA buffers the
way a TensorRT execution context would. Every case is compared with oea_trt.routing.reference.oea_route
on the same device: expert ids bit-exact, weights to 1e-5 relative. Covers every logits dtype,
token-kind mode (none / device token_kind / TensorRT-LLM host inputs incl. the plain top-k
fallbacks), the k0 load-time override and CUDA-graph capture.

Set OEA_TRT_PLUGIN_RESULTS=<file.json> to record the largest weight error of every case.
"""
import json
import os

import pytest
import torch

from oea_trt import plugin as plugin_lib
from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import oea_route
from plugin_harness import DT_FLOAT, LOGITS_DTYPE, PluginHarness, plugin_build  # noqa: F401

pytestmark = pytest.mark.gpu

CONFIGS = {
    "qwen3-30b-k0=3": OEAConfig(num_experts=128, top_k=8, k0=3),
    "vanilla": OEAConfig.vanilla(128, 8),
    "schedule": OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((4, 5), (16, 3))),
    "every-knob": OEAConfig(num_experts=60, top_k=4, k0=2, k_max=6, max_rank=20, top_p=0.7,
                            renormalize=False, fill="top1", piggyback_on_context=False),
    "fill-num-experts": OEAConfig(num_experts=128, top_k=8, k0=4, fill="num_experts"),
    "E=256": OEAConfig(num_experts=256, top_k=8, k0=4, k_max=10),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOKENS = [1, 16, 64, 257]
WEIGHT_RTOL, WEIGHT_ATOL = 1e-5, 1e-7
_ERRORS = {}


@pytest.fixture(scope="module")
def harness(plugin_build):  # noqa: F811
    yield PluginHarness(plugin_build)
    path = os.environ.get("OEA_TRT_PLUGIN_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump({"max_weight_abs_error": _ERRORS, "cases": len(_ERRORS)}, f, indent=1, sort_keys=True)


def _logits(T, E, dtype, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    # Scale 3 gives peaked rows like a real router; fp16/bf16 rounding adds ties.
    return (3 * torch.randn(T, E, generator=g)).to(dtype).cuda()


def _run(plugin, logits, input1=None, input2=None, num_seq=0, max_tokens=None):
    T = logits.shape[0]
    ids = torch.full((T, plugin.k_max), -7, dtype=torch.int32, device="cuda")
    weights = torch.full((T, plugin.k_max), float("nan"), dtype=torch.float32, device="cuda")
    nbytes = plugin.workspace(LOGITS_DTYPE[str(logits.dtype)[6:]], max_tokens or max(T, 1), max(num_seq, 1))
    assert nbytes >= 0
    workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda")
    status = plugin.enqueue(logits, ids, weights, workspace, torch.cuda.current_stream().cuda_stream,
                            input1, input2, num_seq)
    assert status == 0, "enqueue failed (see the [oea_trt] message above)"
    torch.cuda.synchronize()
    return ids, weights


def _check(case, ids, weights, logits, config, token_kind=None):
    ref = oea_route(logits, config, token_kind)
    assert torch.equal(ids, ref.expert_ids), f"{case}: expert ids differ from the reference"
    torch.testing.assert_close(weights, ref.weights, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, msg=case)
    _ERRORS[case] = float((weights - ref.weights).abs().max()) if weights.numel() else 0.0


def _host_batch(T, seed):
    """A TensorRT-LLM packed batch of T rows: context requests first, then generation rows."""
    g = torch.Generator().manual_seed(seed)
    context_rows = int(torch.randint(0, T + 1, (1,), generator=g)) if T > 1 else 0
    lengths = []
    left = context_rows
    while left > 0:
        n = int(torch.randint(1, left + 1, (1,), generator=g))
        lengths.append(n)
        left -= n
    generation = T - context_rows
    types = torch.tensor([0] * len(lengths) + [1] * generation, dtype=torch.int32)
    host_lengths = torch.tensor(lengths + [0] * generation, dtype=torch.int32)
    kinds = torch.tensor([CONTEXT] * context_rows + [DECODE] * generation, dtype=torch.int32, device="cuda")
    return types, host_lengths, kinds


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_all_decode_rows(harness, name, dtype, T):
    config = CONFIGS[name]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_NONE)
    logits = _logits(T, config.num_experts, DTYPES[dtype], seed=T)
    _check(f"none/{name}/{dtype}/T{T}", *_run(plugin, logits), logits, config)


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_device_token_kind(harness, name, dtype, T):
    config = CONFIGS[name]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_DEVICE)
    logits = _logits(T, config.num_experts, DTYPES[dtype], seed=1000 + T)
    g = torch.Generator().manual_seed(T)
    # Mostly decode, some context, some padding (2 and other values).
    choices = torch.tensor([DECODE] * 12 + [CONTEXT] * 5 + [2, 2, 7], dtype=torch.int32)
    token_kind = choices[torch.randint(0, len(choices), (T,), generator=g)].cuda()
    _check(f"device/{name}/{dtype}/T{T}", *_run(plugin, logits, token_kind), logits, config, token_kind)


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_trtllm_host_batch(harness, name, dtype, T):
    config = CONFIGS[name]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_TRTLLM)
    logits = _logits(T, config.num_experts, DTYPES[dtype], seed=2000 + T)
    types, lengths, kinds = _host_batch(T, seed=T)
    ids, weights = _run(plugin, logits, types, lengths, num_seq=types.numel())
    _check(f"trtllm/{name}/{dtype}/T{T}", ids, weights, logits, config, kinds)


def _all_context(T):
    return torch.full((T,), CONTEXT, dtype=torch.int32, device="cuda")


def test_trtllm_inconsistent_batch_falls_back_to_plain_top_k(harness):
    config = CONFIGS["qwen3-30b-k0=3"]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_TRTLLM)
    logits = _logits(40, 128, torch.float32, seed=5)
    types = torch.tensor([0, 1, 1], dtype=torch.int32)
    lengths = torch.tensor([30, 0, 0], dtype=torch.int32)  # 32 rows described, 40 given
    ids, weights = _run(plugin, logits, types, lengths, num_seq=3)
    _check("trtllm/inconsistent", ids, weights, logits, config, _all_context(40))
    vanilla = oea_route(logits, OEAConfig.vanilla(128, 8))
    assert torch.equal(ids, vanilla.expert_ids)  # plain top-k is exactly baseline routing


def test_trtllm_device_memory_inputs_are_never_read_on_the_host(harness):
    # A plain TensorRT build times the layer with device buffers for every input.
    config = CONFIGS["qwen3-30b-k0=3"]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_TRTLLM)
    logits = _logits(16, 128, torch.float16, seed=6)
    types = torch.ones(16, dtype=torch.int32, device="cuda")
    lengths = torch.zeros(16, dtype=torch.int32, device="cuda")
    ids, weights = _run(plugin, logits, types, lengths, num_seq=16)
    _check("trtllm/device-pointers", ids, weights, logits, config, _all_context(16))


def test_trtllm_while_building_routes_plain_top_k(harness, monkeypatch):
    config = CONFIGS["qwen3-30b-k0=3"]
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_TRTLLM)
    logits = _logits(16, 128, torch.bfloat16, seed=7)
    types = torch.ones(16, dtype=torch.int32)
    lengths = torch.zeros(16, dtype=torch.int32)
    monkeypatch.setenv("IS_BUILDING", "1")
    ids, weights = _run(plugin, logits, types, lengths, num_seq=16)
    _check("trtllm/is-building", ids, weights, logits, config, _all_context(16))
    monkeypatch.delenv("IS_BUILDING")
    ids, weights = _run(plugin, logits, types, lengths, num_seq=16)
    _check("trtllm/generation-only", ids, weights, logits, config)


def test_zero_tokens(harness):
    plugin = harness.create(CONFIGS["qwen3-30b-k0=3"])
    ids, weights = _run(plugin, torch.empty(0, 128, device="cuda"))
    assert ids.shape == (0, 8) and weights.shape == (0, 8)


def test_non_finite_logits(harness):
    config = OEAConfig(num_experts=16, top_k=4, k0=2, fill="top1")
    plugin = harness.create(config, plugin_lib.TOKEN_KIND_DEVICE)
    logits = _logits(6, 16, torch.float32, seed=8)
    logits[0, :] = float("nan")
    logits[1, 3:] = float("-inf")
    logits[2, 5] = float("inf")
    logits[3, ::2] = float("nan")
    token_kind = torch.tensor([0, 0, 0, 1, 0, 2], dtype=torch.int32, device="cuda")
    _check("non-finite", *_run(plugin, logits, token_kind), logits, config, token_kind)


def test_k0_override_routes_with_the_overridden_k0(harness, monkeypatch):
    config = OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((64, 6),))
    built = harness.create(config)
    logits = _logits(32, 128, torch.float16, seed=9)
    monkeypatch.setenv(plugin_lib.K0_ENV, "2")
    monkeypatch.setenv(plugin_lib.K0_SCHEDULE_ENV, "16:3")
    loaded = built.reload()
    assert loaded is not None
    overridden = config.replace(k0=2, k0_schedule=((16, 3),))
    _check("k0-override", *_run(loaded, logits), logits, overridden)
    ids, _ = _run(built, logits)  # the build-phase plugin keeps the engine's values
    assert torch.equal(ids, oea_route(logits, config).expert_ids)


@pytest.mark.parametrize("mode", [plugin_lib.TOKEN_KIND_NONE, plugin_lib.TOKEN_KIND_TRTLLM])
def test_enqueue_is_cuda_graph_capturable(harness, mode):
    config = CONFIGS["schedule"]
    plugin = harness.create(config, mode)
    T, E = 48, config.num_experts
    logits = _logits(T, E, torch.bfloat16, seed=10)
    ids = torch.empty(T, config.k_max, dtype=torch.int32, device="cuda")
    weights = torch.empty(T, config.k_max, dtype=torch.float32, device="cuda")
    workspace = torch.empty(max(plugin.workspace(LOGITS_DTYPE["bfloat16"], T, T), 1), dtype=torch.uint8,
                            device="cuda")
    # TensorRT-LLM captures generation-only batches: the host split is fixed at capture.
    types, lengths = torch.ones(T, dtype=torch.int32), torch.zeros(T, dtype=torch.int32)
    args = (types, lengths, T) if mode == plugin_lib.TOKEN_KIND_TRTLLM else (None, None, 0)
    _run(plugin, logits, *args)  # warm-up outside capture (module loading, lazy init)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        status = plugin.enqueue(logits, ids, weights, workspace, torch.cuda.current_stream().cuda_stream, *args)
    assert status == 0
    for seed in (11, 12):
        logits.copy_(_logits(T, E, torch.bfloat16, seed=seed))
        graph.replay()
        torch.cuda.synchronize()
        _check(f"graph/mode{mode}/seed{seed}", ids, weights, logits, config)
