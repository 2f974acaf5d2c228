"""transformers' own decode of the decode benchmark's model: the baseline rows.

The transformers Qwen3MoeForCausalLM is built around the benchmark's weight tensors
(oea_trt.decode.to_hf: shared, so the 30B shape fits once), with transformers' default experts
implementation for the device. Its generate() is timed as a user would run it, greedy:
  "eager"     the default dynamic cache, every B of spec.hf_batches;
  "oea"       the same with OEA routing hooked in (oea_trt.integrations.hf.apply_oea, k0 = the
              spec's first k0), at spec.hf_focus_batch;
  "compiled"  cache_implementation="static", which transformers' generate() compiles with
              torch.compile where the model supports it, at spec.hf_focus_batch (after one
              untimed call that compiles).
TPOT is the time between the first and the last generated token over the steps between them,
from a streamer that notes when each token reaches the host (transformers' loop waits for
every token anyway, to check for the end token).
"""
from __future__ import annotations

import gc
import time
from typing import Callable, List

import torch

MODES = ("eager", "oea", "compiled")


class _TokenClock:
    """A transformers streamer that notes when each put() arrives (prompt first, then tokens)."""

    def __init__(self):
        self.times: List[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    def tpot_ms(self) -> float:
        tokens = self.times[1:]
        return (tokens[-1] - tokens[0]) / (len(tokens) - 1) * 1e3 if len(tokens) > 1 else float("nan")


def time_generate(hf, ids: torch.Tensor, mask: torch.Tensor, steps: int, **generate_kwargs) -> dict:
    """One untimed call (compiles what needs compiling), then a timed one."""
    kwargs = dict(max_new_tokens=steps + 1, min_new_tokens=steps + 1, do_sample=False, pad_token_id=0,
                  temperature=None, top_k=None, top_p=None, **generate_kwargs)
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    graphs_before = _compiled_graphs()
    t0 = time.perf_counter()
    with torch.no_grad():
        hf.generate(input_ids=ids, attention_mask=mask, **kwargs)
    sync()
    first_call_s = time.perf_counter() - t0
    compiled = _compiled_graphs() - graphs_before  # did generate() really compile (the "compiled" row)?
    clock = _TokenClock()
    with torch.no_grad():
        hf.generate(input_ids=ids, attention_mask=mask, streamer=clock, **kwargs)
    sync()
    return {"tpot_ms": clock.tpot_ms(), "first_call_s": first_call_s, "dynamo_graphs_compiled": compiled}


def _compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has compiled in this process so far."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # a torch without dynamo
        return 0
    return int(counters["stats"]["unique_graphs"])


def transformers_model(model):
    """The transformers model around `model`'s tensors (one for the whole run: what
    torch.compile made for it is reused when only the router values change)."""
    from oea_trt.decode import to_hf

    return to_hf(model.shape, model.weights)


def run_hf_baselines(hf, model, spec, router_kind: str, start: float, log: Callable[[str], None],
                     on_row: Callable[[dict], None]) -> None:
    """The transformers rows for one router set (the routers already in the shared tensors):
    eager at the focus batch first (always), then OEA, the other batches and the compiled
    baseline while spec.hf_time_budget_s (from `start`) lasts; on_row(row) after each, so a run
    cut short keeps the rows it has."""
    from oea_trt.bench.decode_inputs import random_prompts  # the prompts of our rows

    impl = getattr(hf.config, "_experts_implementation", None)
    focus = spec.hf_focus_batch
    plan = [("eager", focus)] if "eager" in spec.hf else []  # the headline comparison, never skipped
    plan += [("oea", focus)] if "oea" in spec.hf else []
    plan += [("eager", b) for b in spec.hf_batches if "eager" in spec.hf and b != focus]
    plan += [("compiled", focus)] if "compiled" in spec.hf else []
    for i, (mode, batch) in enumerate(plan):
        if i and spec.hf_time_budget_s is not None and time.time() - start > spec.hf_time_budget_s:
            on_row({"routers": router_kind, "mode": mode, "batch": batch, "skipped": "time budget"})
            continue
        ids, mask = random_prompts(model.shape, batch, spec.prompt_length, spec.seed, model.device)
        row = {"routers": router_kind, "mode": mode, "batch": batch, "experts_implementation": impl}
        handle = None
        try:
            extra = {}
            if mode == "oea":
                from oea_trt.integrations.hf import apply_oea

                row["k0"] = spec.k0s[0]
                handle = apply_oea(hf, spec.k0s[0], mode="generate")
            elif mode == "compiled":
                extra["cache_implementation"] = "static"
            row.update(time_generate(hf, ids, mask, spec.hf_steps, **extra))
            row["tokens_per_s"] = batch / row["tpot_ms"] * 1e3
            log(f"transformers {mode} {router_kind} B={batch}: TPOT {row['tpot_ms']:.1f} ms "
                f"(first call {row['first_call_s']:.1f} s, experts {impl}, "
                f"{row['dynamo_graphs_compiled']} graphs compiled)")
        except Exception as exc:  # noqa: BLE001 (a baseline that cannot run is reported, not fatal)
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            log(f"transformers {mode} {router_kind} B={batch}: FAILED {row['error']}")
        finally:
            if handle is not None:
                handle.remove()
            gc.collect()
        on_row(row)
