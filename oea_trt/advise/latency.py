"""Latency models of one MoE layer in decode: microseconds as a function of distinct experts T.

Decode MoE is memory-bound, so one layer's time is close to a line in T (every active expert's
weights are read once): us = us_per_expert * T + fixed_us. Two sources:
- the MoE benchmark (`oea-trt bench moe`): least squares over its timed rows (routing + MoE,
  CUDA-graph replay) of one GPU and layer shape, per batch size and over all batch sizes. The
  fits of the committed runs ship as package data (latency_fits.json, derived by derive_fits()
  from benchmarks/results/*; the test suite re-derives them); a results.json of your own run
  can be read directly (from_bench_results);
- the memory-bound floor when no GPU figures exist: T x expert_bytes / bandwidth, no fixed cost
  (what `oea-trt simulate` prints).
A batch size without its own fit uses the nearest measured one (in log2 B), as vLLM's fused MoE
picks the nearest tuned batch size.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from oea_trt.moe.shapes import MoEShape

#: Package data: fits of the committed MoE benchmark runs, one entry per (GPU, layer shape).
FITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latency_fits.json")
FITS_FORMAT = "oea-trt/latency-fits/1"
#: The committed runs the package data is derived from (repository paths).
FIT_SOURCES = ("benchmarks/results/moe_h100/results.json", "benchmarks/results/moe.json")
#: Which timing a fit is of: "total" = routing + MoE layer, what a decode step pays.
METRIC = "total"


@dataclasses.dataclass(frozen=True)
class LinearFit:
    us_per_expert: float
    fixed_us: float
    r2: Optional[float] = None
    points: Optional[int] = None

    def us(self, active_experts: float) -> float:
        return self.us_per_expert * active_experts + self.fixed_us


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    """One MoE layer's latency: a fit per measured batch size, and one over all of them."""

    description: str
    overall: LinearFit
    by_batch: Mapping[int, LinearFit] = dataclasses.field(default_factory=dict)

    def fit_for(self, batch: int) -> LinearFit:
        if not self.by_batch:
            return self.overall
        nearest = min(self.by_batch, key=lambda b: (abs(math.log2(b) - math.log2(batch)), b))
        return self.by_batch[nearest]

    def layer_us(self, batch: int, active_experts: float) -> float:
        """Microseconds of one MoE layer at decode batch `batch` with T = active_experts."""
        return self.fit_for(batch).us(active_experts)

    def to_dict(self) -> dict:
        return {"description": self.description, "overall": dataclasses.asdict(self.overall),
                "by_batch": {str(b): dataclasses.asdict(f) for b, f in sorted(self.by_batch.items())}}


def least_squares(ts: Sequence[float], us: Sequence[float]) -> LinearFit:
    """us = slope * T + intercept over the points, with R^2."""
    x, y = np.asarray(ts, dtype=np.float64), np.asarray(us, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError(f"a latency fit needs at least 2 distinct T values, got {sorted(set(x.tolist()))}")
    slope, intercept = np.polyfit(x, y, 1)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - (slope * x + intercept)) ** 2).sum())
    return LinearFit(float(slope), float(intercept), 1.0 - ss_res / ss_tot if ss_tot > 0 else None, int(x.size))


def gpu_key(name: str) -> str:
    """Short GPU name of a benchmark run: "NVIDIA H100 80GB HBM3" -> "h100"."""
    words = [w for w in name.lower().replace("nvidia", " ").split() if any(c.isdigit() for c in w)]
    return words[0] if words else name.lower().strip()


def _timed_rows(results: dict, preset: str, impl: str) -> List[dict]:
    # The same rows the benchmark report fits: one kernel, every mode/batch/variant, the repeat
    # of vanilla (a noise check) left out.
    return [r for r in results["rows"] if r.get("impl") == impl and r.get("preset") == preset
            and r.get("moe_us") and r.get(f"{METRIC}_us") is not None and r.get("variant") != "vanilla#2"]


def derive_fits(results: dict, source: str) -> List[dict]:
    """Package-data entries (one per layer shape) from one `oea-trt bench moe` results.json."""
    impl = results.get("best_kernel") or "triton"
    env = results.get("env", {})
    entries = []
    for preset, info in results["presets"].items():
        rows = _timed_rows(results, preset, impl)
        if len(rows) < 3:
            continue
        by_batch = {}
        for b in sorted({r["batch"] for r in rows}):
            pts = [r for r in rows if r["batch"] == b]
            if len({r["T"] for r in pts}) >= 2:
                by_batch[str(b)] = dataclasses.asdict(least_squares([r["T"] for r in pts],
                                                                    [r[f"{METRIC}_us"] for r in pts]))
        entries.append({
            "gpu": gpu_key(env.get("gpu", {}).get("name", "unknown")),
            "gpu_name": env.get("gpu", {}).get("name"),
            "preset": preset, "shape": info.get("shape"), "expert_bytes": info.get("expert_bytes"),
            "kernel": impl, "metric": METRIC, "source": source, "commit": env.get("git", {}).get("commit"),
            "dirty": env.get("git", {}).get("dirty"), "time_utc": env.get("time_utc"),
            "copy_tb_s": results.get("bandwidth", {}).get("copy_tb_s"),
            "overall": dataclasses.asdict(least_squares([r["T"] for r in rows], [r[f"{METRIC}_us"] for r in rows])),
            "by_batch": by_batch,
        })
    return entries


def write_fits(sources: Sequence[str], path: str = FITS_FILE, root: str = ".") -> None:
    """Re-derive the package data from committed benchmark results (paths relative to root)."""
    entries = []
    for source in sources:
        with open(os.path.join(root, source)) as f:
            entries += derive_fits(json.load(f), source)
    with open(path, "w") as f:
        json.dump({"format": FITS_FORMAT, "fits": entries}, f, indent=1, sort_keys=True)
        f.write("\n")


def package_fits() -> List[dict]:
    with open(FITS_FILE) as f:
        content = json.load(f)
    if content.get("format") != FITS_FORMAT:
        raise ValueError(f"{FITS_FILE} has format {content.get('format')!r}, expected {FITS_FORMAT!r}")
    return content["fits"]


def _model_from_entry(entry: dict) -> LatencyModel:
    commit = entry.get("commit") or "unknown commit"
    dirty = " (uncommitted changes)" if entry.get("dirty") else ""
    description = (f"{entry.get('gpu_name') or entry['gpu']}, {entry['preset']} layer: MoE benchmark fit "
                   f"(routing + MoE, kernel {entry['kernel']}; {entry['source']}, commit {commit}{dirty})")
    return LatencyModel(description, LinearFit(**entry["overall"]),
                        {int(b): LinearFit(**f) for b, f in entry.get("by_batch", {}).items()})


def benchmark_model(gpu: str = "h100", preset: str = "qwen3-30b-a3b") -> LatencyModel:
    """The committed MoE benchmark fit for one GPU and layer shape (package data)."""
    entries = package_fits()
    for entry in entries:
        if entry["gpu"] == gpu.lower() and entry["preset"] == preset:
            return _model_from_entry(entry)
    have = ", ".join(f"{e['gpu']}/{e['preset']}" for e in entries)
    raise ValueError(f"no committed MoE benchmark fit for GPU {gpu!r} and layer shape {preset!r}; "
                     f"available: {have} (or pass a results.json of `oea-trt bench moe`, or use the memory floor)")


def available_fits() -> Dict[str, List[str]]:
    """{gpu: [layer shapes]} of the package data."""
    out: Dict[str, List[str]] = {}
    for entry in package_fits():
        out.setdefault(entry["gpu"], []).append(entry["preset"])
    return out


def from_bench_results(path: str, preset: str = "qwen3-30b-a3b") -> LatencyModel:
    """The fit of a results.json written by `oea-trt bench moe` (your own GPU's run)."""
    from oea_trt.inputs import read_json

    results = read_json(path, "MoE benchmark results")
    if "rows" not in results or "presets" not in results:
        raise ValueError(f"{path} is not a results.json of `oea-trt bench moe` (no 'rows' and 'presets')")
    for entry in derive_fits(results, path):
        if entry["preset"] == preset:
            return _model_from_entry(entry)
    raise ValueError(f"{path} has no timed rows for layer shape {preset!r}; it has "
                     f"{', '.join(results['presets']) or 'none'}")


def floor_model(shape: MoEShape, bandwidth_tb_s: float) -> LatencyModel:
    """The memory-bound floor: T x expert_bytes / bandwidth, no fixed cost."""
    if not bandwidth_tb_s > 0:
        raise ValueError(f"bandwidth must be a positive number of TB/s, got {bandwidth_tb_s}")
    return LatencyModel(f"memory-bound floor: {shape.name} layer ({shape.expert_bytes / 1e6:.2f} MB per expert) "
                        f"at {bandwidth_tb_s:g} TB/s, no fixed cost",
                        LinearFit(shape.floor_us(1.0, bandwidth_tb_s), 0.0))
