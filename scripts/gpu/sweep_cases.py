"""What the lab sweeps share (tile_sweep.py, moe_stream/moe_stream.py): one batch's skewed vanilla
and OEA k0=3 routings of the 30B layer with their floors, and one timed row of a call beside them
(MoE only and routing+MoE, CUDA-graph replay over the rotated weight copies, as `bench moe` times),
and the loop over batch sizes that produces them."""
import time

import torch

from oea_trt.bench.bandwidth import measure_bandwidth
from oea_trt.bench.moe_timing import RoutingBatch, oea_config, time_moe, time_routed
from oea_trt.bench.routers import pick_router
from oea_trt.bench.routing_inputs import SyntheticSource
from oea_trt.moe.tuned import config_for
from oea_trt.routing.reference import oea_route


def sweep_batches(shape, weights, batch_sizes, budget_s: float, t0: float, results: dict):
    """Measures the copy rate (into results["copy_Bps"]) and picks the kernel router, then yields
    (B, router, RoutingBatch, cases, shipped config) per batch size; none starts after budget_s
    seconds from t0."""
    bw = measure_bandwidth(1 << 30).copy_tb_s * 1e12
    results["copy_Bps"] = bw
    router = pick_router("kernel")
    print(f"{torch.cuda.get_device_name()}: copy {bw / 1e12:.2f} TB/s, {len(weights)} weight copies", flush=True)
    source = SyntheticSource("skewed", shape.num_experts)
    for b in batch_sizes:
        if time.time() - t0 > budget_s:
            print(f"budget reached: B={b} not run", flush=True)
            continue
        batch, cases = batch_cases(source, shape, b, len(weights), bw)
        yield b, router, batch, cases, config_for(batch.x[0], weights[0].w13, shape.top_k)


def batch_cases(source, shape, batch_size: int, copies: int, copy_Bps: float):
    """(RoutingBatch, {"vanilla" | "k0=3": (OEAConfig, routings, floor us)}); prints the floors."""
    batch = RoutingBatch(source, batch_size, copies, shape.hidden_size, 0, "cuda", torch.bfloat16)
    cases = {}
    for label, k0 in (("vanilla", shape.top_k), ("k0=3", 3)):
        cfg = oea_config(shape, k0)
        routings = [oea_route(lg, cfg) for lg in batch.logits]
        T = sum(int(r.num_active) for r in routings) / len(routings)
        cases[label] = (cfg, routings, T * shape.expert_bytes / copy_Bps * 1e6)
    print(f"== B={batch_size}: floor vanilla {cases['vanilla'][2]:.1f} us, k0=3 {cases['k0=3'][2]:.1f} us "
          f"(MoE only us (x floor) | routing+MoE us)", flush=True)
    return batch, cases


def time_row(row: dict, fn, batch, weights, router, cases: dict, repeats: int) -> dict:
    """Times fn(x, weights, routing) on every case into row (which names it); prints one line."""
    for label, (cfg, routings, floor) in cases.items():
        moe = time_moe(fn, batch, weights, routings, repeats=repeats).median_us
        routed = time_routed(fn, batch, weights, router, cfg, repeats=repeats).median_us
        row[label] = {"moe_us": moe, "x_floor": moe / floor, "routed_us": routed}
    row["ratio_routed"] = row["k0=3"]["routed_us"] / row["vanilla"]["routed_us"]
    v, o = row["vanilla"], row["k0=3"]
    print(f"  {row['name']:28s} vanilla {v['moe_us']:6.1f} ({v['x_floor']:.2f}) | {v['routed_us']:6.1f}   "
          f"k0=3 {o['moe_us']:6.1f} ({o['x_floor']:.2f}) | {o['routed_us']:6.1f}   ratio {row['ratio_routed']:.3f}",
          flush=True)
    return row
