"""What `oea-trt advise` hands on: the routing plan, the exact `oea-trt build` flags, a per-layer
k0 file for `--layer-k0`, an oea_config.json-format file and the advice itself as JSON.

The oea_config.json-format file has the format, routing plan and model keys of the file
`oea-trt build` writes next to an engine, so whatever reads an engine's plan reads this one
(oea_trt.plan.config_file.read_engine_config / routing_from_engine_config; HFRuntime.open on
the advice directory routes the model with the advised plan; `oea-trt build --routing-config`
builds with it).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from typing import Dict, List, Optional

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.predict import Choice
from oea_trt.advise.search import Advice
from oea_trt.plan.config_file import FILE_NAME, engine_config_dict
from oea_trt.plan.hf_config import Qwen3MoeSpec
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import OEAConfig, format_k0_schedule

ADVICE_FILE = "advice.json"
LAYER_K0_FILE = "layer_k0.json"
CONFIG_FILE = FILE_NAME  # oea_config.json
PLOT_FILE = "advise_pareto.png"
CHECK_FILE = "check.json"


def routing_plan(advice: Advice, spec: Qwen3MoeSpec) -> RoutingPlan:
    """The plan a build with the advised flags records (raises ConfigError if it cannot)."""
    if advice.layers and sorted(advice.layers) != sorted(spec.moe_layers):
        raise ValueError(f"the eval results' MoE layers {list(advice.layers)} are not the model's "
                         f"({spec.moe_layers}): advise for the model that was evaluated")
    base = OEAConfig(num_experts=spec.num_experts, top_k=spec.top_k, k0=advice.base_k0,
                     renormalize=spec.norm_topk_prob, k0_schedule=advice.schedule or None)
    return RoutingPlan(base=base, moe_layers=tuple(spec.moe_layers), layer_k0=dict(advice.layer_k0))


def build_flags(advice: Advice, layer_k0_path: str) -> List[str]:
    """The routing flags of `oea-trt build` that give the advised plan."""
    flags = ["--k0", str(advice.base_k0)]
    if advice.schedule:
        flags += ["--k0-schedule", format_k0_schedule(advice.schedule)]
    if advice.layer_k0:
        flags += ["--layer-k0", layer_k0_path]
    return flags


def routing_config_flags(out_dir: str) -> List[str]:
    """The `oea-trt build` flag that takes the whole advised plan from the written oea_config.json."""
    return ["--routing-config", os.path.join(out_dir, CONFIG_FILE)]


def build_command(hf_dir: str, flags: List[str], engine_dir: str = "ENGINE_DIR") -> str:
    return shlex.join(["oea-trt", "build", hf_dir, "-o", engine_dir] + flags)


def layer_k0_json(advice: Advice) -> Dict[str, int]:
    return {str(layer): k for layer, k in sorted(advice.layer_k0.items())}


def _choice_dict(c: Choice) -> dict:
    d = dataclasses.asdict(c)
    d.update(k0_by_layer=list(c.k0_by_layer), active_experts=list(c.active_experts),
             mean_active_experts=c.mean_active_experts, label=c.label())
    return d


def advice_dict(advice: Advice, latency: LatencyModel, flags: List[str], command: str, inputs: dict,
                additivity: List[dict]) -> dict:
    per_batch = []
    for b in advice.batches:
        c, u, v = advice.choices[b], advice.best_uniform[b], advice.vanilla[b]
        per_batch.append({
            "batch": b, "weight": advice.weights[b], "budget": advice.budgets[b],
            "routing": "per-layer k0" if b in advice.per_layer_batches else "k0 schedule",
            "advised": _choice_dict(c), "best_single_k0": _choice_dict(u), "vanilla": _choice_dict(v),
            "latency_ratio_to_vanilla": c.layer_us / v.layer_us,
            "active_experts_vs_best_single_k0": c.mean_active_experts - u.mean_active_experts,
        })
    return {
        "inputs": inputs, "latency_model": latency.to_dict(), "bound": advice.bound, "search": advice.search,
        "base_k0": advice.base_k0, "k0_schedule": format_k0_schedule(advice.schedule) or None,
        "layer_k0": layer_k0_json(advice), "per_layer_batches": list(advice.per_layer_batches),
        "build_flags": flags, "build_command": command,
        "expected_layer_us": {"advised": advice.expected_us("choices"),
                              "best_single_k0": advice.expected_us("best_uniform"),
                              "vanilla": advice.expected_us("vanilla")},
        "per_batch": per_batch, "additivity": additivity, "notes": advice.notes,
    }


def config_dict(plan: RoutingPlan, hf_dir: str, flags: List[str], summary: dict) -> dict:
    """oea_config.json format: what `oea-trt build` with these flags would record, plus the advice."""
    content = engine_config_dict(plan, build={"advised_by": "oea-trt advise", "flags": flags},
                                 model={"hf_dir": hf_dir})
    content["advice"] = summary
    return content


def write_json(path: str, content) -> str:
    """Write atomically (temporary name, then rename): a failure leaves no partial file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_outputs(out_dir: str, advice: Advice, plan: RoutingPlan, hf_dir: str, flags: List[str],
                  content: dict, path_for) -> List[str]:
    """advice.json, oea_config.json and (when the plan has per-layer k0) layer_k0.json, each at
    path_for(its final path) (StagedOutputs.path: all of them or none end up in out_dir)."""
    written = [write_json(path_for(os.path.join(out_dir, ADVICE_FILE)), content)]
    summary = {k: content[k] for k in ("bound", "k0_schedule", "layer_k0", "expected_layer_us")}
    summary["per_batch"] = [{"batch": p["batch"], "budget": p["budget"], "advised": p["advised"]["label"],
                             "predicted_delta_ce": p["advised"]["delta_ce"],
                             "active_experts": p["advised"]["mean_active_experts"],
                             "layer_us": p["advised"]["layer_us"]} for p in content["per_batch"]]
    written.append(write_json(path_for(os.path.join(out_dir, CONFIG_FILE)), config_dict(plan, hf_dir, flags, summary)))
    if advice.layer_k0:
        written.append(write_json(path_for(os.path.join(out_dir, LAYER_K0_FILE)), layer_k0_json(advice)))
    return written


def relative_if_inside(path: str, start: Optional[str] = None) -> str:
    """A path as short as it can be said from `start` (the working directory): commands and
    committed files then do not carry one machine's absolute paths."""
    rel = os.path.relpath(path, start or os.getcwd())
    return path if rel.startswith("..") else rel
