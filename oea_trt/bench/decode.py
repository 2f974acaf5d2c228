"""The end-to-end decode benchmark (`oea-trt bench decode`): time per output token of a whole
Qwen3-MoE model under vanilla routing and OEA, on our fast decode path, against transformers.

One model with the real shapes (default Qwen3-30B-A3B: 48 layers, 128 experts, top-8, hidden
2048, expert 768, 32 q / 4 kv heads of 128, vocabulary 151936) is built once with random
weights on the GPU, layer by layer (oea_trt.models.random_model), and timed with two router
sets: "skewed" (calibrated like oea_trt.routing.synthetic.SkewedRouter: ~49 distinct experts
of 128 at B=16) and "uniform". For each router set and batch B, every routing (vanilla = k0 8,
then each k0) starts from the same prefill of random prompts; a row is:
  * TPOT: the median over `repeats` samples of `steps` CUDA-graph replays of the decode step
    (sampling at temperature 1, so tokens, and with them routing, vary as in serving), timed
    with CUDA events, the replays under torch.cuda.set_sync_debug_mode("error");
  * T: distinct experts per MoE layer per step, recorded inside the graph (mean, per layer);
  * the MoE share: a CUDA graph of just the router GEMM + routing + MoE of every layer, on the
    hidden states the layers saw at one step, over the TPOT;
  * the memory floor: bytes a step must read (dense weights, T x expert bytes per layer, the
    KV cache up to the current position) over the copy bandwidth measured in the same run.
transformers' own decode (decode_hf.py) runs on the very same weight tensors (to_hf shares them).
Correctness comes first (tests/test_decode_gpu.py); here, per router set, one graph-replayed
step is also compared with the eager step on the same state.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from oea_trt.bench.bandwidth import measure_bandwidth
from oea_trt.bench.decode_inputs import random_prompts
from oea_trt.bench.env import environment
from oea_trt.decode import DecodeEngine, DecodeModel, Sampler, capacity_for, get_shape
from oea_trt.decode.graph import decode_step
from oea_trt.moe import moe_forward
from oea_trt.routing import OEAConfig, route

SHAPES = ("qwen3-30b-a3b",)
VANILLA = "vanilla"


@dataclasses.dataclass(frozen=True)
class DecodeBenchSpec:
    shape: str = "qwen3-30b-a3b"
    layers: Optional[int] = None               # None: all of the shape's layers
    batch_sizes: Tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    k0s: Tuple[int, ...] = (3, 4, 5)
    routers: Tuple[str, ...] = ("skewed", "uniform")
    prompt_length: int = 32
    steps: int = 16                            # decode steps per timing sample
    repeats: int = 5                           # samples per row (median reported)
    warmup: int = 2                            # replays before timing
    hf: Tuple[str, ...] = ("eager", "oea", "compiled")   # transformers baselines (decode_hf.py)
    hf_batches: Tuple[int, ...] = (1, 4, 8, 16, 32, 64)  # batches of the eager baseline
    hf_focus_batch: int = 16                   # the one batch of the "oea" and "compiled" baselines
    hf_steps: int = 8                          # decode steps per transformers timing
    time_budget_s: Optional[float] = None      # start no new block of our rows after this many seconds
    hf_time_budget_s: Optional[float] = None   # then start no new transformers row after this many more
    seed: int = 0
    device: str = "cuda"                       # "cpu": eager steps, host timers (a smoke run of the code)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def out_of_time(self, start: float) -> bool:
        return self.time_budget_s is not None and time.time() - start > self.time_budget_s


def _log(message: str) -> None:
    print(f"[bench decode {time.strftime('%H:%M:%S')}] {message}", flush=True)


def routings(shape, k0s) -> List[Tuple[str, OEAConfig]]:
    """(name, config): vanilla first (k0 = top_k: the same path, plain top-k), then each k0."""
    out = [(VANILLA, OEAConfig.vanilla(shape.num_experts, shape.top_k, renormalize=shape.norm_topk_prob))]
    out += [(f"k0={k0}", OEAConfig(shape.num_experts, shape.top_k, k0, renormalize=shape.norm_topk_prob))
            for k0 in k0s]
    return out


def build_model(spec: DecodeBenchSpec):
    """(model, {router kind: routers}, seconds): random weights on the GPU, routers calibrated."""
    from oea_trt.models.random_model import calibrated_routers, random_decode_weights

    shape = get_shape(spec.shape)
    if spec.layers is not None:
        shape = shape.with_layers(spec.layers)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if spec.device != "cpu" else torch.float32
    weights = random_decode_weights(shape, device=spec.device, dtype=dtype, seed=spec.seed)
    model = DecodeModel(shape, weights, None)
    routers = {kind: calibrated_routers(model, kind, spec.seed) for kind in spec.routers}
    _sync(model.device)
    return model, routers, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(work: Callable[[], object], device: torch.device, no_sync: bool = False) -> float:
    """Milliseconds of work(): CUDA events around it on a GPU (under set_sync_debug_mode("error")
    when no_sync: any host synchronisation inside raises), the host clock elsewhere."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        work()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    previous = torch.cuda.get_sync_debug_mode()
    if no_sync:
        torch.cuda.set_sync_debug_mode("error")
    try:
        start.record()
        work()
        end.record()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    end.synchronize()
    return start.elapsed_time(end)


def time_row(engine: DecodeEngine, spec: DecodeBenchSpec, batch: int, bandwidth_tb_s: float) -> dict:
    """Prefill, capture, time; the row's TPOT, T per layer, MoE share and floor."""
    model, shape = engine.model, engine.model.shape
    ids, mask = random_prompts(shape, batch, spec.prompt_length, spec.seed, model.device)
    total = spec.warmup + spec.repeats * spec.steps
    capacity = capacity_for(spec.prompt_length + total + 2)
    sampler = Sampler(temperature=1.0)
    torch.manual_seed(spec.seed)
    state = engine.prefill(ids, mask, capacity, sampler).state
    t_capture = time.perf_counter()
    runner = engine.step_runner(state, sampler)
    _sync(model.device)
    capture_s = time.perf_counter() - t_capture
    for _ in range(spec.warmup):
        runner.replay()

    def steps():
        for _ in range(spec.steps):
            runner.replay()

    # a replay that waited for the host would raise inside timed_ms
    samples = [timed_ms(steps, model.device, no_sync=True) / spec.steps for _ in range(spec.repeats)]
    tpot = statistics.median(samples)
    active = state.active[spec.warmup:total].float()  # [timed steps, MoE layers]
    per_layer = active.mean(0).tolist()
    steps_by_layer = active.int().tolist() if batch == spec.hf_focus_batch else None
    moe_ms = moe_only_ms(engine, state, sampler)
    context = spec.prompt_length + spec.warmup + spec.repeats * spec.steps / 2
    step_bytes = (shape.dense_bytes_per_step() + sum(per_layer) * shape.expert_bytes()
                  + batch * context * shape.kv_bytes_per_token())
    floor_ms = step_bytes / (bandwidth_tb_s * 1e12) * 1e3
    return {"batch": batch, "tpot_ms": tpot, "tokens_per_s": batch / tpot * 1e3, "samples_ms": samples,
            "spread": (max(samples) - min(samples)) / tpot, "active_mean": sum(per_layer) / len(per_layer),
            "active_per_layer": per_layer, "active_min_layer": min(per_layer), "active_max_layer": max(per_layer),
            "active_per_step": active.mean(1).tolist(), "active_by_step_and_layer": steps_by_layer,
            "moe_ms": moe_ms, "moe_share": moe_ms / tpot, "floor_ms": floor_ms, "tpot_over_floor": tpot / floor_ms,
            "capture_s": capture_s, "capacity": capacity}


def moe_only_ms(engine: DecodeEngine, state, sampler, repeats: int = 5, replays: int = 3) -> float:
    """Milliseconds of the MoE part of one step (router GEMM, routing, MoE of every layer) in a
    CUDA graph over the hidden states the layers saw at the state's next step (one eager step,
    undone afterwards)."""
    model = engine.model
    inputs: Dict[int, torch.Tensor] = {}
    model.routing_observer = lambda layer, h, logits, routing: inputs.__setitem__(layer, h.clone())
    snapshot = state.snapshot()
    try:
        decode_step(model, state, sampler, 0, None)
    finally:
        model.routing_observer = None
        state.restore(snapshot)

    def moe_layers():
        for layer, h in inputs.items():
            lw = model.weights.layers[layer]
            routing = route(F.linear(h, lw.router), model.configs[layer], signal=True)
            moe_forward(h, lw.experts, routing, impl=model.decode_moe_impl)

    if model.device.type != "cuda":
        return statistics.median(timed_ms(moe_layers, model.device) for _ in range(repeats))
    from oea_trt.bench.timing import time_in_graph

    return time_in_graph(moe_layers, repeats=repeats, replays=replays).median_us / 1e3


def check_graph_against_eager(engine: DecodeEngine, spec: DecodeBenchSpec, batch: int) -> dict:
    """One step replayed from the graph and the same step run eagerly on the same state: logits
    (max |difference| / max |eager|) and distinct experts per layer."""
    shape = engine.model.shape
    ids, mask = random_prompts(shape, batch, spec.prompt_length, spec.seed + 1, engine.model.device)
    sampler = Sampler()  # greedy: both runs pick the same token
    state = engine.prefill(ids, mask, capacity_for(spec.prompt_length + 4), sampler).state
    runner = engine.step_runner(state, sampler)
    snapshot = state.snapshot()
    eager = decode_step(engine.model, state, sampler, 0, None).float().clone()
    eager_active = state.active[0].clone()
    state.restore(snapshot)
    runner.replay()
    _sync(engine.model.device)
    graph = runner.logits.float()
    return {"batch": batch, "logits_rel_diff": float((graph - eager).abs().max() / eager.abs().max()),
            "active_equal": bool(torch.equal(state.active[0], eager_active))}


def run_decode_benchmark(spec: DecodeBenchSpec, on_progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Everything in `spec`; on_progress(results) after every block (a run cut short keeps its rows)."""
    from oea_trt.models.random_model import set_routers
    from oea_trt.routing.dispatch import kernel_available

    if spec.device != "cpu" and not torch.cuda.is_available():
        raise RuntimeError("the decode benchmark needs a CUDA GPU (torch.cuda.is_available() is False)")
    t0 = time.time()
    env = environment()
    _log(f"GPU {env.get('gpu', {}).get('name')}, torch {env['torch']}, triton {env.get('triton')}, "
         f"commit {env['git']['commit']}")
    bw = measure_bandwidth() if spec.device != "cpu" else host_bandwidth()
    _log(f"bandwidth: copy {bw.copy_tb_s:.2f} TB/s, read {bw.read_tb_s:.2f} TB/s")
    model, routers, build_s = build_model(spec)
    shape = model.shape
    gib = sum(t.numel() * t.element_size() for t in _tensors(model.weights)) / 2**30
    _log(f"built {spec.shape} ({shape.num_layers} layers, {gib:.1f} GiB {model.dtype}) and {len(routers)} router sets "
         f"in {build_s:.1f} s")
    results = {"env": env, "bandwidth": bw.to_dict(), "spec": spec.to_dict(), "shape": shape.to_dict(),
               "model_gib": gib, "dtype": str(model.dtype).removeprefix("torch."), "build_s": build_s,
               "routing_impl": "kernel" if kernel_available() else "reference (torch; the kernel did not load)",
               "rows": [], "hf_rows": [], "checks": [], "skipped": []}
    engine = DecodeEngine(model, max_states=1)
    for kind, router_weights in routers.items():
        set_routers(model.weights, shape, router_weights)
        for name, config in routings(shape, (spec.k0s[0],)):
            engine.set_routing(config)
            check = check_graph_against_eager(engine, spec, min(16, max(spec.batch_sizes)))
            results["checks"].append(dict(check, routers=kind, routing=name))
            _log(f"{kind} {name}: graph vs eager step rel diff {check['logits_rel_diff']:.2e}, "
                 f"same T {check['active_equal']}")
        for batch in spec.batch_sizes:
            if spec.out_of_time(t0):
                results["skipped"].append(f"{kind} B={batch}: time budget")
                continue
            for name, config in routings(shape, spec.k0s):
                engine.set_routing(config)
                row = dict(time_row(engine, spec, batch, bw.copy_tb_s), routers=kind, routing=name)
                results["rows"].append(row)
                _log(f"{kind} B={batch:3d} {name:8s} TPOT {row['tpot_ms']:7.3f} ms  {row['tokens_per_s']:8.0f} tok/s  "
                     f"T {row['active_mean']:5.1f}  MoE {100 * row['moe_share']:4.1f}%  "
                     f"{row['tpot_over_floor']:.2f}x floor")
            results["seconds"] = time.time() - t0
            if on_progress:
                on_progress(results)
    del engine
    if spec.hf:  # after all of our rows: the compiled baseline may take minutes to compile
        _free(model.device)
        from oea_trt.bench.decode_hf import run_hf_baselines, transformers_model

        def add(row):
            results["hf_rows"].append(row)
            results["seconds"] = time.time() - t0
            if on_progress:
                on_progress(results)

        hf = transformers_model(model)
        hf_start = time.time()
        for kind, router_weights in routers.items():
            set_routers(model.weights, shape, router_weights)
            run_hf_baselines(hf, model, spec, kind, hf_start, _log, add)
    return results


def _free(device: torch.device) -> None:
    """Return the freed graphs' and caches' memory (the transformers baseline needs it)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def host_bandwidth(nbytes: int = 64 << 20):
    """Copy and read bandwidth of host memory, for a CPU smoke run's floor column."""
    from oea_trt.bench.bandwidth import Bandwidth

    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    copy = min(timed_ms(lambda: dst.copy_(src), torch.device("cpu")) for _ in range(3))
    read = min(timed_ms(lambda: src.sum(), torch.device("cpu")) for _ in range(3))
    return Bandwidth(copy_tb_s=2 * nbytes / (copy * 1e-3) / 1e12, read_tb_s=nbytes / (read * 1e-3) / 1e12,
                     nbytes=nbytes, copy_spread=0.0, read_spread=0.0)


def _tensors(weights):
    seen = {}
    for t in [weights.embed, weights.final_norm, weights.lm_head]:
        seen[t.data_ptr()] = t
    for lw in weights.layers:
        for t in (lw.input_norm, lw.post_norm, lw.wqkv, lw.q_norm, lw.k_norm, lw.wo, lw.router, lw.mlp_w13, lw.mlp_w2):
            if t is not None:
                seen[t.data_ptr()] = t
        if lw.experts is not None:
            seen[lw.experts.w13.data_ptr()] = lw.experts.w13
            seen[lw.experts.w2.data_ptr()] = lw.experts.w2
    return list(seen.values())
