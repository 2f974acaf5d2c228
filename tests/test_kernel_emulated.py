"""The CUDA routing kernel's own source, run on the CPU through tests/kernel_emulation.

Every CUDA thread is a host thread and every warp collective / barrier a real rendezvous, so
this checks the kernel's logic (phase split, one-token-per-warp resume, cluster merge through
distributed shared memory, multi-block path, fill, overflow slots) against the reference
without a GPU. Timing and the GPU memory model are not emulated: tests/test_kernel_gpu.py and
compute-sanitizer on the GPU remain the word on those. The emulated library is built with
OEA_ROUTING_DEBUG_KNOBS, whose experiment variables are read once per loaded library, so each
path runs in its own copy of it.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oea_trt.routing.config import FILL_MODES, OEAConfig
from oea_trt.routing.params import LAUNCH_PDL, kernel_params
from oea_trt.routing.reference import oea_route

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing_cases import DTYPES, random_config, random_logits, random_token_kind  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the emulated kernel")

POISON_ID = -7777
LOGITS_TYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# Paths, each a library copy with its knobs: (env of the first call, launch_flags).
PATHS = {
    "decode": ({}, LAUNCH_PDL),                                         # decode kernel: one warp per token, clusters up to 8
    "general": ({"OEA_ROUTING_GENERAL": "1"}, LAUNCH_PDL),              # the general one-launch kernel, same batches
    "one_cta": ({"OEA_ROUTING_MAX_CLUSTER": "1"}, LAUNCH_PDL),          # no cluster: warps stride over several tokens
    "multiblock": ({"OEA_ROUTING_FORCE_MULTIBLOCK": "1"}, LAUNCH_PDL),  # memset + phase-1 grid + phase-2 grid
    "no_cluster_hw": ({"EMU_NO_CLUSTER": "1"}, LAUNCH_PDL),             # a GPU without clusters
    "no_pdl": ({}, 0),                                                  # launched without the PDL attribute
    "spread": ({"OEA_ROUTING_WARPS_PER_CTA": "4"}, LAUNCH_PDL),         # few warps per CTA: clusters from T=5
}


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parent / "kernel_emulation"))
    import build

    from oea_trt.routing.library import KernelLibrary

    # OEA_EMULATION_SANITIZE=thread: ThreadSanitizer reports shared-memory races between barriers
    # (racecheck's job on the GPU); keep T <= 128 then (it tracks at most ~8k threads).
    lib = build.build(Path(os.environ.get("OEA_EMULATION_BUILD", tmp_path_factory.mktemp("emulated"))),
                      sanitize=os.environ.get("OEA_EMULATION_SANITIZE", ""))
    out = {}
    for name, (env, flags) in PATHS.items():
        copy = tmp_path_factory.mktemp(name) / lib.name
        shutil.copy(lib, copy)
        out[name] = (KernelLibrary(copy), env, flags)
    return out


def run_emulated(libraries, path, logits, cfg, kinds=None, leading=0, active_ready=None):
    library, env, flags = libraries[path]
    T, E = logits.shape
    params = kernel_params(cfg)
    raw = logits.contiguous().view(torch.int16 if logits.dtype != torch.float32 else torch.int32)
    ids = torch.full((T, cfg.k_max), POISON_ID, dtype=torch.int32)
    weights = torch.full((T, cfg.k_max), float("nan"), dtype=torch.float32)
    mask = torch.full((E,), 0xAB, dtype=torch.uint8)
    num_active = torch.full((1,), -12345, dtype=torch.int32)
    ws = torch.full((max(1, library.workspace_size(params, T)),), 0xCD, dtype=torch.uint8)
    kinds_c = None if kinds is None else kinds.contiguous()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc = library.launch(params, raw.data_ptr() if T else 0, LOGITS_TYPE[logits.dtype],
                            0 if kinds_c is None else kinds_c.data_ptr(), leading, T, ids.data_ptr() if T else 0,
                            weights.data_ptr() if T else 0, mask.data_ptr(), num_active.data_ptr(),
                            0 if active_ready is None else active_ready.data_ptr(), ws.data_ptr(), ws.numel(), flags, 0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert rc == 0, f"oea_route_launch returned {rc}"
    assert bool(((mask == 0) | (mask == 1)).all()), "active_mask holds a value other than 0/1 (unwritten?)"
    return ids, weights, mask.bool(), int(num_active[0])


def check(libraries, path, logits, cfg, kinds=None, leading=0, what="", active_ready=None):
    T = logits.shape[0]
    ref_kinds = kinds
    if leading:
        ref_kinds = torch.tensor([1] * leading + [0] * (T - leading), dtype=torch.int32)
    want = oea_route(logits, cfg, ref_kinds)
    ids, weights, mask, num_active = run_emulated(libraries, path, logits, cfg, kinds, leading, active_ready)
    what = f"[{path}] T={T} {logits.dtype} kinds={'-' if kinds is None else 'given'} leading={leading} {cfg} {what}"
    if not torch.equal(ids, want.expert_ids):
        row = int((ids != want.expert_ids).any(-1).nonzero().flatten()[0])
        raise AssertionError(f"{what}: ids differ, first row {row}:\n  kernel    {ids[row].tolist()}\n"
                             f"  reference {want.expert_ids[row].tolist()}")
    # The emulation's expf is the host libm's, the reference's torch's CPU one: ulps apart.
    torch.testing.assert_close(weights, want.weights, rtol=1e-5, atol=1e-7, msg=lambda m: f"{what}: {m}")
    assert torch.equal(mask, want.active_mask), f"{what}: active_mask differs"
    assert num_active == int(want.num_active), f"{what}: num_active {num_active} vs {int(want.num_active)}"


def random_emulated_case(seed: int):
    rng = np.random.default_rng(seed)
    E = int(rng.choice([8, 64, 128, 256, 512, 600]))
    cfg = random_config(rng, E, max_k=16)
    u = rng.random()
    T = int(rng.integers(0, 33)) if u < 0.5 else int(rng.integers(33, 97)) if u < 0.85 else int(rng.integers(97, 257))
    dtype = DTYPES[int(rng.integers(len(DTYPES)))]
    kinds = random_token_kind(rng, T)
    leading = int(rng.integers(0, T + 1)) if kinds is None and T and rng.random() < 0.3 else 0
    return random_logits(rng, T, E, dtype), cfg, kinds, leading


@pytest.mark.parametrize("path", list(PATHS))
def test_emulated_kernel_equals_reference_on_random_cases(libraries, path):
    cases = int(os.environ.get("OEA_EMULATION_CASES", "12"))
    for seed in range(cases):
        logits, cfg, kinds, leading = random_emulated_case(9_100_000 + seed)
        check(libraries, path, logits, cfg, kinds, leading, f"seed={seed}")


@pytest.mark.parametrize("path", list(PATHS))
def test_emulated_active_ready_signal(libraries, path):
    """oea_route_launch with active_ready: the same routing, and the flag ends set (whatever it held)."""
    for seed in range(4):
        logits, cfg, kinds, leading = random_emulated_case(9_200_000 + seed)
        ready = torch.full((1,), -3 + seed, dtype=torch.int32)
        check(libraries, path, logits, cfg, kinds, leading, f"seed={seed} with active_ready", active_ready=ready)
        assert int(ready[0]) == 1, f"[{path}] seed={seed}: active_ready ended {int(ready[0])}, want 1"


CONFIGS = [
    OEAConfig(num_experts=128, top_k=8, k0=3),
    OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((8, 4), (16, 3)), fill="top1"),
    OEAConfig(num_experts=128, top_k=8, k0=2, k_max=12, max_rank=20, top_p=0.6, fill="num_experts"),
    OEAConfig(num_experts=128, top_k=8, k0=4, renormalize=False, piggyback_on_context=False, fill="top1"),
]


@pytest.mark.parametrize("T", [0, 1, 31, 32, 33, 64, 65, 255, 256])
def test_emulated_path_boundaries(libraries, T):
    g = torch.Generator().manual_seed(T)
    logits = (torch.randn(T, 128, generator=g) * 2).to(torch.bfloat16)
    kinds = torch.randint(0, 3, (T,), generator=g, dtype=torch.int32)
    for i, cfg in enumerate(CONFIGS):
        path = list(PATHS)[(T + i) % len(PATHS)] if T > 1 else "decode"
        for k in (None, kinds):
            check(libraries, path, logits, cfg, k)


def test_emulated_slots_beyond_a_warp(libraries):
    """k_max > 32 (slots from lane 0 again, stored and read back) and n0 > 32 (no resume)."""
    g = torch.Generator().manual_seed(3)
    for T, cfg in [(5, OEAConfig(num_experts=256, top_k=40, k0=5, k_max=70, fill="top1")),
                   (40, OEAConfig(num_experts=256, top_k=8, k0=36, k_max=48)),
                   (3, OEAConfig(num_experts=64, top_k=40, k0=40, k_max=64, fill="num_experts"))]:
        logits = torch.randn(T, cfg.num_experts, generator=g)
        kinds = (torch.arange(T) % 3).to(torch.int32)
        for path in ("general", "one_cta"):
            check(libraries, path, logits, cfg, kinds)
            check(libraries, path, logits, cfg, None)


def test_emulated_ties_and_non_finite_rows(libraries):
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        x = np.round(rng.standard_normal((40, 64)) * 1.5) / 2
        x[0, :] = np.nan
        x[1, :] = -np.inf
        x[2, :32] = np.inf
        logits = torch.from_numpy(x.astype(np.float32)).to(dtype)
        for fill in FILL_MODES:
            for top_p in (0.9, 1.0):  # top_p < 1 takes the general kernel, 1.0 the decode kernel
                cfg = OEAConfig(num_experts=64, top_k=6, k0=2, k_max=8, fill=fill, top_p=top_p)
                for path in ("decode", "general"):
                    check(libraries, path, logits, cfg, (torch.arange(40) % 4).to(torch.int32))


def test_debug_knobs_steer_the_launch_and_bad_flags_are_refused(libraries):
    """The knobs are really read in this build: the multi-block path needs its workspace (a
    launch without one is cudaErrorInvalidValue), the one-launch path of the same call does not.
    Unknown launch_flags bits are refused before anything runs."""
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3)
    logits = torch.randn(4, 128)
    ids = torch.empty(4, 8, dtype=torch.int32)
    weights = torch.empty(4, 8)

    def launch_without_workspace(path, flags):
        library = libraries[path][0]
        env = libraries[path][1]
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return library.launch(kernel_params(cfg), logits.data_ptr(), 0, 0, 0, 4, ids.data_ptr(), weights.data_ptr(),
                                  0, 0, 0, 0, 0, flags, 0)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    assert launch_without_workspace("decode", LAUNCH_PDL) == 0
    assert launch_without_workspace("multiblock", LAUNCH_PDL) == 1  # cudaErrorInvalidValue: no workspace
    assert launch_without_workspace("decode", 2) == 1  # no such launch flag


@pytest.mark.parametrize("path", ["decode", "no_pdl", "spread", "no_cluster_hw"])
def test_emulated_decode_kernel_on_its_configurations(libraries, path):
    """Random cases the decode kernel takes (E <= 256, k_max <= 32, top_p off, max_rank = E):
    every other knob, dtype, token-kind mix, tie and non-finite row, T from 0 to 256."""
    for seed in range(int(os.environ.get("OEA_EMULATION_CASES", "12"))):
        rng = np.random.default_rng(9_300_000 + seed)
        E = int(rng.choice([8, 64, 100, 128, 256]))
        c = random_config(rng, E, max_k=16)
        k_max = min(c.k_max, 32)
        schedule = tuple((m, min(k, k_max)) for m, k in c.k0_schedule) if c.k0_schedule else None
        cfg = OEAConfig(num_experts=E, top_k=c.top_k, k0=min(c.k0, k_max), k_max=k_max, renormalize=c.renormalize,
                        fill=c.fill, piggyback_on_context=c.piggyback_on_context, k0_schedule=schedule)
        u = rng.random()
        T = int(rng.integers(0, 33)) if u < 0.5 else int(rng.integers(33, 97)) if u < 0.85 else int(rng.integers(97, 257))
        kinds = random_token_kind(rng, T)
        leading = int(rng.integers(0, T + 1)) if kinds is None and T and rng.random() < 0.3 else 0
        logits = random_logits(rng, T, E, DTYPES[int(rng.integers(len(DTYPES)))])
        check(libraries, path, logits, cfg, kinds, leading, f"seed={seed}")


@pytest.mark.slow
@pytest.mark.parametrize("option", ["", "OEA_ROUTING_MAX_CLUSTER=1", "OEA_ROUTING_FORCE_MULTIBLOCK=1"])
def test_emulated_kernel_has_no_data_races(tmp_path, option):
    """ThreadSanitizer over the emulated kernel (racecheck's question, asked on the CPU): no two
    threads touch the same shared or global word without a barrier or atomic between them, on
    one CTA (T=5), a cluster of two (T=40) and, with the options, several tokens per warp or the
    multi-block path."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent / "kernel_emulation"))
    import build

    try:
        exe = build.build_race_driver(tmp_path)
    except RuntimeError as exc:
        if "tsan" in str(exc).lower() or "sanitize" in str(exc).lower():
            pytest.skip(f"no ThreadSanitizer: {str(exc)[:200]}")
        raise
    env = dict(os.environ)
    if option:
        name, value = option.split("=")
        env[name] = value
    proc = subprocess.run([str(exe), "5", "40"], env=env, capture_output=True, text=True, timeout=600)
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr[-6000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("err=0") == 8, proc.stdout
