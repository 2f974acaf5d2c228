"""The transformers runtime behind the EngineRuntime interface: a Hugging Face transformers
Qwen3-MoE model routed with OEA by oea_trt.integrations.hf, its own eager generate(). The
PyTorch path on the CPU (on CUDA, open_runtime picks the fast decode path, fast_decode.py).
Same routing plan as the engine (read from oea_config.json when opened on an engine directory),
same generate() signature and results.

    rt = HFRuntime.open("/models/Qwen3-30B-A3B", k0=3)          # or oea=False for vanilla
    print(rt.generate(["Hello"], SamplingOptions(max_new_tokens=16))[0].text)
    print(rt.routing_stats(), rt.last_timing)                   # distinct experts per step, TPOT
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.runtime.base import (Generation, GenerationTiming, SamplingOptions, check_prompts, cut_at_end,
                                  format_prompts)
from oea_trt.runtime.model_dir import DEFAULT_K0, default_routing, load_tokenizer, resolve

__all__ = ["DEFAULT_K0", "HFRuntime", "default_routing"]

#: progress(decode_steps_done, decode_steps_total, seconds_since_first_token)
Progress = Callable[[int, int, float], None]


class _StepClock:
    """A transformers streamer that only notes when each step's tokens arrive: the prompt first,
    then one call per generated position (timings and progress without touching the loop)."""

    def __init__(self, total_steps: int, progress: Optional[Progress], every: int = 16):
        self.times: List[float] = []
        self.total, self.progress, self.every = total_steps, progress, every

    def put(self, value) -> None:
        self.times.append(time.perf_counter())
        steps = len(self.times) - 2  # decode steps after the prompt and the first token
        if self.progress is not None and steps > 0 and steps % self.every == 0:
            self.progress(steps, self.total, self.times[-1] - self.times[1])

    def end(self) -> None:
        pass


class HFRuntime:
    backend = "pytorch"
    implementation = "transformers"

    def __init__(self, model, tokenizer, routing: Optional[RoutingPlan], handle, chat: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.routing = routing          # None when OEA is off (vanilla top-k)
        self.handle = handle            # oea_trt.integrations.hf.OEAHandle (None when OEA is off)
        self.chat = chat
        self.last_timing: Optional[GenerationTiming] = None

    @classmethod
    def open(cls, path: str, *, k0: Optional[int] = None, k0_schedule=None, layer_k0: Optional[Dict[int, int]] = None,
             oea: bool = True, routing: Optional[RoutingPlan] = None, device: Optional[str] = None,
             dtype=None, chat: bool = False, model=None) -> "HFRuntime":
        """path: an HF Qwen3-MoE directory, or an engine directory whose oea_config.json names
        one (its routing plan is then used). k0 / k0_schedule / layer_k0 override the plan;
        oea=False routes vanilla top-k. `model`: an already-loaded transformers model for `path`."""
        import torch
        from transformers import AutoModelForCausalLM

        hf_dir, routing = resolve(path, routing, k0, k0_schedule, layer_k0)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=dtype if dtype is not None else "auto")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device).eval()
        tokenizer = load_tokenizer(hf_dir)
        handle = None
        if oea:
            from oea_trt.integrations.hf import apply_oea

            configs = {layer: routing.config_for_layer(layer) for layer in routing.moe_layers}
            handle = apply_oea(model, configs, mode="generate")
        return cls(model, tokenizer, routing if oea else None, handle, chat)

    def generate(self, prompts: Sequence[str], options: Optional[SamplingOptions] = None,
                 progress: Optional[Progress] = None) -> List[Generation]:
        import torch

        options = options or SamplingOptions()
        prompts = check_prompts(prompts)
        texts = format_prompts(self.tokenizer, prompts, self.chat)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        sample = options.temperature > 0
        clock = _StepClock(options.max_new_tokens - 1, progress)
        kwargs = dict(max_new_tokens=options.max_new_tokens, do_sample=sample, streamer=clock,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if sample:
            kwargs.update(temperature=options.temperature, top_k=options.top_k or None, top_p=options.top_p)
            if options.seed is not None:
                torch.manual_seed(options.seed)
        else:  # greedy; unset the checkpoint's sampling defaults so transformers does not warn
            kwargs.update(temperature=None, top_k=None, top_p=None)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        end = time.perf_counter()
        first = clock.times[1] if len(clock.times) > 1 else end
        self.last_timing = GenerationTiming(batch=len(prompts), prefill_s=first - start, decode_s=end - first,
                                            decode_steps=max(0, len(clock.times) - 2))
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        end_ids = {self.tokenizer.eos_token_id}
        results = []
        for prompt, row in zip(prompts, new):
            ids, finished = cut_at_end(row, end_ids)
            results.append(Generation(prompt, self.tokenizer.decode(ids, skip_special_tokens=True), ids, finished))
        return results

    def routing_stats(self) -> Dict[int, dict]:
        """Per MoE layer: decode/prefill steps routed and mean distinct experts per step."""
        return self.handle.stats() if self.handle is not None else {}

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
