"""The fused CUDA routing kernel equals the reference router (GPU only).

Expert ids must match oea_trt.routing.reference.oea_route bit for bit and weights within 1e-6 relative, on
thousands of fresh random cases over every knob, dtype, token-kind mix, T from 0 to 4096, with
ties, -0/+0, NaN and inf rows. Outputs and workspace are poisoned before every call, so a slot
the kernel forgets to write (or a stale workspace read) fails. The reference runs on the same
GPU tensors; a share of cases is also checked against the CPU reference.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from oea_trt.routing.config import FILL_MODES, OEAConfig
from oea_trt.routing.reference import RoutingInputError, RoutingResult, oea_route

from routing_cases import DTYPES, random_config, random_logits, random_token_kind

pytestmark = pytest.mark.gpu

POISON_ID = 0x7FFFFFFF
POISON_MASK = 0xAB
FLT_MIN = float(torch.finfo(torch.float32).tiny)


@pytest.fixture(scope="module", autouse=True)
def kernel():
    from oea_trt.routing import dispatch
    from oea_trt.routing.kernel import load_library

    load_library()  # fails loudly (not a silent fallback) when the library cannot be had
    assert dispatch.kernel_available()


def run_poisoned(logits, cfg, kinds=None, num_leading_context=0, active_ready=None, pdl=None) -> RoutingResult:
    """The kernel into outputs and workspace full of garbage (route_into, the checked entry);
    active_ready: the early active-set flag, or None; pdl: programmatic dependent launch."""
    from oea_trt.routing.kernel import route_into, workspace_bytes

    T, E = logits.shape
    dev = logits.device
    ids = torch.full((T, cfg.k_max), POISON_ID, dtype=torch.int32, device=dev)
    weights = torch.full((T, cfg.k_max), float("nan"), dtype=torch.float32, device=dev)
    mask = torch.full((E,), POISON_MASK, dtype=torch.uint8, device=dev)
    num_active = torch.full((1,), -12345, dtype=torch.int32, device=dev)
    workspace = torch.full((workspace_bytes(cfg, T),), 0xCD, dtype=torch.uint8, device=dev)
    route_into(logits, cfg, ids, weights, mask, num_active, kinds, num_leading_context, workspace,
               active_ready=active_ready, pdl=pdl)
    assert bool(((mask == 0) | (mask == 1)).all()), "active_mask holds a value other than 0/1 (unwritten?)"
    return RoutingResult(ids, weights, mask.bool(), num_active[0])


def assert_same(got: RoutingResult, want: RoutingResult, what: str, rtol: float = 1e-6):
    if not torch.equal(got.expert_ids, want.expert_ids):
        bad = (got.expert_ids != want.expert_ids).any(-1).nonzero().flatten()
        row = int(bad[0])
        raise AssertionError(f"{what}: expert ids differ in {len(bad)} rows, first row {row}:\n"
                             f"  kernel    {got.expert_ids[row].tolist()}\n  reference {want.expert_ids[row].tolist()}")
    torch.testing.assert_close(got.weights, want.weights, rtol=rtol, atol=FLT_MIN, msg=lambda m: f"{what}: {m}")
    assert torch.equal(got.active_mask, want.active_mask), f"{what}: active_mask differs"
    assert int(got.num_active) == int(want.num_active), f"{what}: num_active {int(got.num_active)} vs {int(want.num_active)}"


def random_tokens(rng) -> int:
    u = rng.random()
    if u < 0.40:
        return int(rng.integers(0, 17))
    if u < 0.65:
        return int(rng.integers(17, 65))
    if u < 0.85:
        return int(rng.integers(65, 257))  # the one-launch (cluster) path ends at 256
    if u < 0.96:
        return int(rng.integers(257, 1025))
    return int(rng.integers(1025, 4097))


def random_kernel_case(seed: int):
    rng = np.random.default_rng(seed)
    E = int(rng.choice([8, 64, 128, 256, 512]))
    cfg = random_config(rng, E, max_k=16)
    T = random_tokens(rng)
    dtype = DTYPES[int(rng.integers(len(DTYPES)))]
    logits = random_logits(rng, T, E, dtype)
    kinds = random_token_kind(rng, T)
    leading = 0
    if kinds is None and T and rng.random() < 0.3:  # TensorRT-LLM packing given as a count
        leading = int(rng.integers(0, T + 1))
    return logits, cfg, kinds, leading


def kinds_for_leading(T: int, leading: int):
    return torch.tensor([1] * leading + [0] * (T - leading), dtype=torch.int32)


CHUNKS, PER_CHUNK = 8, 500  # 4,000 fresh cases


@pytest.mark.parametrize("chunk", range(CHUNKS), ids=lambda c: f"chunk{c}")
def test_kernel_equals_reference_on_random_cases(chunk):
    seed0 = 7_000_000 + chunk * PER_CHUNK
    for seed in range(seed0, seed0 + PER_CHUNK):
        logits, cfg, kinds, leading = random_kernel_case(seed)
        T = logits.shape[0]
        x = logits.cuda()
        k = None if kinds is None else kinds.cuda()
        ref_kinds = kinds_for_leading(T, leading).cuda() if leading else k
        want = oea_route(x, cfg, ref_kinds)
        signal = seed % 4 == 1  # every path with the early active-set flag too: same rows, flag ends set
        ready = torch.full((1,), -5, dtype=torch.int32, device=x.device) if signal else None
        pdl = False if seed % 3 == 2 else None  # and without programmatic dependent launch
        got = run_poisoned(x, cfg, k, leading, active_ready=ready, pdl=pdl)
        what = f"seed={seed} T={T} dtype={logits.dtype} leading={leading} pdl={pdl} {cfg}"
        assert_same(got, want, what)
        if signal:
            assert int(ready[0]) == 1, f"active_ready ended {int(ready[0])}: {what}"
        if seed % 8 == 0:  # the public op path (fresh outputs from torch's allocator)
            from oea_trt.routing.kernel import route_kernel

            assert_same(route_kernel(x, cfg, k, leading), want, "op: " + what)
        if seed % 10 == 0:  # and the CPU reference (its softmax differs from CUDA's by ulps)
            cpu = oea_route(logits, cfg, kinds_for_leading(T, leading) if leading else kinds)
            assert torch.equal(got.expert_ids.cpu(), cpu.expert_ids), "cpu: " + what
            torch.testing.assert_close(got.weights.cpu(), cpu.weights, rtol=1e-5, atol=1e-7)
            assert torch.equal(got.active_mask.cpu(), cpu.active_mask), "cpu: " + what


def decode_kernel_case(seed: int):
    """A case the decode kernel takes: E <= 256, k_max <= 32, top_p off, max_rank = E."""
    rng = np.random.default_rng(seed)
    E = int(rng.choice([8, 60, 64, 128, 160, 256]))
    c = random_config(rng, E, max_k=16)
    k_max = min(c.k_max, 32)
    schedule = tuple((m, min(k, k_max)) for m, k in c.k0_schedule) if c.k0_schedule else None
    cfg = OEAConfig(num_experts=E, top_k=c.top_k, k0=min(c.k0, k_max), k_max=k_max, renormalize=c.renormalize,
                    fill=c.fill, piggyback_on_context=c.piggyback_on_context, k0_schedule=schedule)
    T = int(rng.integers(0, 257)) if rng.random() < 0.4 else int(rng.integers(0, 65))
    kinds = random_token_kind(rng, T)
    leading = int(rng.integers(0, T + 1)) if kinds is None and T and rng.random() < 0.3 else 0
    return random_logits(rng, T, E, DTYPES[int(rng.integers(len(DTYPES)))]), cfg, kinds, leading


@pytest.mark.parametrize("chunk", range(2), ids=lambda c: f"chunk{c}")
def test_decode_kernel_equals_reference_on_its_configurations(chunk):
    """1,000 fresh cases of the configurations the latency-critical decode kernel routes."""
    seed0 = 7_500_000 + chunk * PER_CHUNK
    for seed in range(seed0, seed0 + PER_CHUNK):
        logits, cfg, kinds, leading = decode_kernel_case(seed)
        T = logits.shape[0]
        x = logits.cuda()
        k = None if kinds is None else kinds.cuda()
        want = oea_route(x, cfg, kinds_for_leading(T, leading).cuda() if leading else k)
        pdl = False if seed % 2 else None
        assert_same(run_poisoned(x, cfg, k, leading, pdl=pdl), want, f"seed={seed} T={T} dtype={logits.dtype} {cfg}")


CONFIGS = [
    OEAConfig(num_experts=128, top_k=8, k0=3),
    OEAConfig.vanilla(128, 8),
    OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((8, 4), (16, 3)), fill="top1"),
    OEAConfig(num_experts=128, top_k=8, k0=2, k_max=12, max_rank=20, top_p=0.6, fill="num_experts"),
    OEAConfig(num_experts=128, top_k=8, k0=4, renormalize=False, piggyback_on_context=False, fill="top1"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257,
                               511, 1024, 4095, 4096], ids=lambda T: f"T{T}")
def test_token_counts_at_every_path_boundary(T, dtype):
    g = torch.Generator().manual_seed(T)
    logits = (torch.randn(T, 128, generator=g) * 2).to(dtype).cuda()
    kinds = torch.randint(0, 3, (T,), generator=g, dtype=torch.int32).cuda()
    for cfg in CONFIGS:
        for k in (None, kinds):
            assert_same(run_poisoned(logits, cfg, k), oea_route(logits, cfg, k), f"T={T} {dtype} kinds={k is not None} {cfg}")


@pytest.mark.parametrize("E", [1, 2, 31, 33, 96, 500, 513, 1000, 1024, 2048, 4096])
def test_unusual_and_large_expert_counts(E):
    rng = np.random.default_rng(E)
    for trial in range(12):
        cfg = random_config(rng, E, max_k=16)
        if trial % 3 == 0 and E >= 48:  # more than 32 slots: ids past the first warp-width
            k = int(rng.integers(1, 17))
            cfg = cfg.replace(top_k=k, k_max=int(rng.integers(max(k, 33), min(E, 80) + 1)), k0=k, k0_schedule=None)
        T = int(rng.choice([0, 1, 7, 64, 200, 300]))
        dtype = DTYPES[trial % 3]
        logits = random_logits(rng, T, E, dtype).cuda()
        kinds = random_token_kind(rng, T)
        kinds = None if kinds is None else kinds.cuda()
        assert_same(run_poisoned(logits, cfg, kinds), oea_route(logits, cfg, kinds), f"E={E} T={T} {dtype} {cfg}")


@pytest.mark.parametrize("T", [5, 40, 300])
def test_context_top_k_beyond_a_warp_of_slots(T):
    E = 256
    cfg = OEAConfig(num_experts=E, top_k=40, k0=5, k_max=70, fill="top1")
    logits = torch.randn(T, E, device="cuda")
    kinds = (torch.arange(T, device="cuda") % 3).to(torch.int32)
    assert_same(run_poisoned(logits, cfg, kinds), oea_route(logits, cfg, kinds), f"T={T}")


def test_ties_signed_zeros_and_non_finite_rows():
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        for T in (3, 50, 400):
            x = np.round(rng.standard_normal((T, 64)) * 1.5) / 2  # few values, many ties, -0.0 and +0.0
            x[0, :] = np.nan
            x[1 % T, :] = -np.inf
            x[2 % T, : 32] = np.inf
            logits = torch.from_numpy(x.astype(np.float32)).to(dtype).cuda()
            for fill in FILL_MODES:
                cfg = OEAConfig(num_experts=64, top_k=6, k0=2, k_max=8, fill=fill, top_p=0.9)
                kinds = torch.from_numpy(rng.integers(0, 3, T).astype(np.int32)).cuda()
                assert_same(run_poisoned(logits, cfg, kinds), oea_route(logits, cfg, kinds), f"{dtype} T={T} {fill}")


def test_empty_batch_writes_an_empty_active_set():
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, fill="top1")
    got = run_poisoned(torch.empty(0, 128, device="cuda", dtype=torch.bfloat16), cfg)
    assert got.expert_ids.shape == (0, 8) and not bool(got.active_mask.any()) and int(got.num_active) == 0


def test_side_stream_and_second_call_reuse():
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)
    logits = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    want = oea_route(logits, cfg)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        from oea_trt.routing.kernel import route_kernel

        results = [route_kernel(logits, cfg) for _ in range(3)]
    torch.cuda.current_stream().wait_stream(side)
    for got in results:
        assert_same(got, want, "side stream")


@pytest.mark.parametrize("pdl", [None, False], ids=["pdl_auto", "no_pdl"])
@pytest.mark.parametrize("T", [8, 200, 1000])  # one CTA, one cluster, multi-block
def test_cuda_graph_replay_equals_eager(T, pdl):
    from functools import partial

    from oea_trt.routing.kernel import route_kernel

    route_kernel = partial(route_kernel, pdl=pdl)
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, k0_schedule=((4, 8), (16, 3)), fill="top1")
    logits = torch.randn(T, 128, device="cuda", dtype=torch.bfloat16)
    kinds = torch.zeros(T, dtype=torch.int32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        route_kernel(logits, cfg, kinds)  # warm-up outside capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            captured = route_kernel(logits, cfg, kinds)
    torch.cuda.current_stream().wait_stream(stream)
    for step in range(4):
        logits.copy_(torch.randn_like(logits) * (1 + step))
        kinds.copy_(torch.randint(0, 3, (T,), device="cuda", dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        eager = route_kernel(logits, cfg, kinds)
        assert torch.equal(captured.expert_ids, eager.expert_ids)
        assert torch.equal(captured.weights, eager.weights)
        assert torch.equal(captured.active_mask, eager.active_mask)
        assert int(captured.num_active) == int(eager.num_active)
        assert_same(eager, oea_route(logits, cfg, kinds), f"graph T={T} step={step}")


def test_torch_compile_smoke():
    import oea_trt

    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)

    def moe_routing(logits):
        result = oea_trt.route(logits, cfg)  # dispatch -> torch.ops.oea_trt.route in the graph
        return result.expert_ids, result.weights * 2.0, result.num_active

    compiled = torch.compile(moe_routing, fullgraph=True, dynamic=False)  # inductor, one shape: quick
    logits = torch.randn(48, 128, device="cuda", dtype=torch.bfloat16)
    ids, weights, num_active = compiled(logits)
    want = oea_route(logits, cfg)
    assert torch.equal(ids, want.expert_ids)
    torch.testing.assert_close(weights, want.weights * 2.0, rtol=1e-6, atol=FLT_MIN)
    assert int(num_active) == int(want.num_active)


def test_dispatch_picks_the_kernel_on_cuda(monkeypatch):
    import oea_trt.routing.kernel as kernels
    from oea_trt.routing.dispatch import route

    calls = []
    real = kernels.route_kernel
    monkeypatch.setattr(kernels, "route_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    logits = torch.randn(4, 128, device="cuda")
    route(logits, OEAConfig(num_experts=128, top_k=8, k0=3))
    assert calls, "dispatch.route did not use the kernel for a CUDA tensor"


def test_bad_outputs_are_rejected_before_launch():
    from oea_trt.routing.kernel import route_into

    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)
    logits = torch.randn(4, 128, device="cuda")
    ids = torch.empty(4, 8, dtype=torch.int64, device="cuda")
    weights = torch.empty(4, 8, device="cuda")
    with pytest.raises(RoutingInputError, match="expert_ids must be torch.int32"):
        route_into(logits, cfg, ids, weights)
    with pytest.raises(RoutingInputError, match="workspace must hold"):
        route_into(logits, cfg.replace(), torch.empty(4, 8, dtype=torch.int32, device="cuda"), weights,
                   workspace=torch.empty(0, dtype=torch.uint8, device="cuda"), token_kind=None)


def test_the_route_path_checks_its_inputs_once(monkeypatch):
    """route -> route_kernel -> torch op -> launch: check_inputs runs once per call."""
    from oea_trt.routing import launch, op, reference
    from oea_trt.routing.dispatch import route

    calls = []
    real = reference.check_inputs
    for module in (op, launch, reference):
        monkeypatch.setattr(module, "check_inputs", lambda *a: calls.append(1) or real(*a))
    logits = torch.randn(16, 128, device="cuda", dtype=torch.bfloat16)
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)
    got = route(logits, cfg, backend="kernel")
    assert len(calls) == 1
    assert_same(got, oea_route(logits, cfg), "route")


def test_pdl_true_runs_where_supported_and_is_refused_elsewhere():
    from oea_trt.routing.kernel import device_supports_pdl, route_kernel

    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)
    logits = torch.randn(16, 128, device="cuda")
    if device_supports_pdl(logits.device):
        assert_same(route_kernel(logits, cfg, pdl=True), oea_route(logits, cfg), "pdl=True")
    else:
        with pytest.raises(ValueError, match="pdl=True needs a GPU of compute capability 9.0"):
            route_kernel(logits, cfg, pdl=True)


@pytest.fixture(scope="module")
def debug_library():
    """liboea_routing.so built with OEA_ROUTING_DEBUG_KNOBS for this GPU (cached like the shipping one)."""
    from oea_trt.routing.library import build_library, current_arch

    return build_library(current_arch(), debug_knobs=True)


def test_debug_knobs_steer_only_the_debug_build(debug_library, tmp_path, monkeypatch):
    """The knobs are live in the debug build (the forced multi-block path needs its workspace:
    a launch without one is cudaErrorInvalidValue) and absent from the shipping one."""
    from oea_trt.routing.kernel import kernel_params, load_library
    from oea_trt.routing.library import KernelLibrary

    copy = tmp_path / "liboea_routing.so"  # a fresh load: the knobs are read at its first launch
    shutil.copy(debug_library, copy)
    monkeypatch.setenv("OEA_ROUTING_FORCE_MULTIBLOCK", "1")
    params = kernel_params(OEAConfig(num_experts=128, top_k=8, k0=3))
    logits = torch.randn(4, 128, device="cuda")
    ids = torch.empty(4, 8, dtype=torch.int32, device="cuda")
    weights = torch.empty(4, 8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream

    def without_workspace(library):
        code = library.launch(params, logits.data_ptr(), 0, 0, 0, 4, ids.data_ptr(), weights.data_ptr(), 0, 0, 0, 0,
                              0, 0, stream)
        torch.cuda.synchronize()
        return code

    assert without_workspace(KernelLibrary(copy)) == 1  # cudaErrorInvalidValue: multi-block, no workspace
    assert without_workspace(load_library()) == 0  # the shipping library: one launch, no workspace needed


def run_with_knob(debug_library, option: str, selection: str) -> None:
    """This file's `selection` in a subprocess on the debug build with one knob set (read once
    per process)."""
    name, value = option.split("=")
    env = dict(os.environ, **{name: value, "OEA_ROUTING_LIBRARY": str(debug_library)})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", selection, "-m", "gpu"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def test_multi_block_path_for_small_batches_too(debug_library):
    """Decode-sized batches normally take the one-launch path; OEA_ROUTING_FORCE_MULTIBLOCK=1 sends
    them through the multi-block kernels, which must give the same answers (they are what GPUs
    without thread-block clusters run)."""
    run_with_knob(debug_library, "OEA_ROUTING_FORCE_MULTIBLOCK=1",
                  "random_cases and chunk0 or path_boundary and (T0- or T1- or T17- or T64- or T256-)")


@pytest.mark.parametrize("option", ["OEA_ROUTING_GENERAL=1", "OEA_ROUTING_MAX_CLUSTER=1", "OEA_ROUTING_WARPS_PER_CTA=4"])
def test_fused_launch_options(debug_library, option):
    """OEA_ROUTING_GENERAL=1 (the general one-launch kernel for decode-sized batches too),
    OEA_ROUTING_MAX_CLUSTER=1 (one CTA: warps route several tokens and reload them in phase 2)
    and OEA_ROUTING_WARPS_PER_CTA=4 (clusters from 5 tokens on) must give the reference's answers
    too, with and without PDL, also inside captured graphs."""
    run_with_knob(debug_library, option,
                  "random_cases and chunk1 or its_configurations and chunk0 or path_boundary and (T1- or T17- or T33- "
                  "or T65- or T255- or T256-) or graph_replay")
