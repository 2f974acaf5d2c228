"""The fast PyTorch runtime: oea_trt.decode (our compact Qwen3-MoE decoder, the routing kernel
and our MoE kernel in every MoE layer, each decode step one CUDA-graph replay) behind the
EngineRuntime interface. open_runtime() picks it on CUDA.

    rt = DecodeRuntime.open("/models/Qwen3-30B-A3B", k0=3)      # oea=False: vanilla top-k, same path
    outs = rt.generate(["Hello"] * 16, SamplingOptions(max_new_tokens=128))
    print(rt.last_timing.tpot_ms, rt.routing_stats())
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.runtime.base import (Generation, GenerationTiming, SamplingOptions, check_prompts, cut_at_end,
                                  format_prompts)
from oea_trt.runtime.model_dir import load_tokenizer, resolve

#: progress(decode_steps_done, decode_steps_total, seconds_since_first_token)
Progress = Callable[[int, int, float], None]


class DecodeRuntime:
    backend = "pytorch"
    implementation = "oea-decode"

    def __init__(self, engine, tokenizer, routing: Optional[RoutingPlan], chat: bool):
        self.engine = engine            # oea_trt.decode.DecodeEngine
        self.tokenizer = tokenizer
        self.routing = routing          # None when OEA is off (the same path with k0 = top_k)
        self.chat = chat
        self.last_timing: Optional[GenerationTiming] = None
        self._active: Dict[int, list] = {}

    @property
    def model(self):
        return self.engine.model

    @classmethod
    def open(cls, path: str, *, k0: Optional[int] = None, k0_schedule=None, layer_k0: Optional[Dict[int, int]] = None,
             oea: bool = True, routing: Optional[RoutingPlan] = None, device: Optional[str] = None, dtype=None,
             chat: bool = False, model=None, use_graphs: Optional[bool] = None) -> "DecodeRuntime":
        """Arguments as HFRuntime.open; `model` may also be an already loaded transformers model
        of `path`. use_graphs: replay each decode step from a CUDA graph (default: on CUDA)."""
        from oea_trt.decode import DecodeEngine, load_hf_model

        hf_dir, routing = resolve(path, routing, k0, k0_schedule, layer_k0)
        decoder = load_hf_model(hf_dir, routing if oea else None, device=device, dtype=dtype, model=model)
        return cls(DecodeEngine(decoder, use_graphs=use_graphs), load_tokenizer(hf_dir), routing if oea else None, chat)

    def generate(self, prompts: Sequence[str], options: Optional[SamplingOptions] = None,
                 progress: Optional[Progress] = None) -> List[Generation]:
        import torch

        from oea_trt.decode import Sampler

        options = options or SamplingOptions()
        prompts = check_prompts(prompts)
        texts = format_prompts(self.tokenizer, prompts, self.chat)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        if options.seed is not None:
            torch.manual_seed(options.seed)
        sampler = Sampler(options.temperature, options.top_k if options.temperature > 0 else 0,
                          options.top_p if options.temperature > 0 else 1.0)
        end_id, pad_id = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        result = self.engine.generate(enc["input_ids"], enc["attention_mask"], options.max_new_tokens, sampler,
                                      end_ids=[end_id] if end_id is not None else [], pad_id=pad_id or 0,
                                      progress=progress)
        self.last_timing = GenerationTiming(batch=len(prompts), prefill_s=result.prefill_s, decode_s=result.decode_s,
                                            decode_steps=result.decode_steps)
        for j, layer in enumerate(self.model.shape.moe_layers):
            counts = self._active.setdefault(layer, [])
            if len(result.prefill_active):
                counts.append(int(result.prefill_active[j]))
            counts.extend(result.active[:, j].tolist())
        out = []
        for prompt, row in zip(prompts, result.tokens.tolist()):
            ids, finished = cut_at_end(row, {end_id})
            out.append(Generation(prompt, self.tokenizer.decode(ids, skip_special_tokens=True), ids, finished))
        return out

    def routing_stats(self) -> Dict[int, dict]:
        """Per MoE layer, over every routed batch since open (each prompt batch, each decode step):
        batches and mean distinct experts, as HFRuntime.routing_stats."""
        stats = {}
        for layer, counts in self._active.items():
            stats[layer] = {"batches": len(counts),
                            "mean_active_experts": sum(counts) / len(counts) if counts else float("nan")}
        return stats

    def close(self) -> None:
        self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
