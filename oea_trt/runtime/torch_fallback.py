"""Pure-PyTorch runtime behind the EngineRuntime interface: a Hugging Face transformers
Qwen3-MoE model routed with OEA by oea_trt.integrations.hf (CPU, or CUDA with the routing kernel), for
machines without TensorRT-LLM. Same routing plan as the engine (read from oea_config.json when
opened on an engine directory), same generate() signature and results.

    rt = HFRuntime.open("/models/Qwen3-30B-A3B", k0=3)          # or oea=False for vanilla
    print(rt.generate(["Hello"], SamplingOptions(max_new_tokens=16))[0].text)
    print(rt.routing_stats())                                   # distinct experts per step
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from oea_trt.routing.config import OEAConfig
from oea_trt.plan.hf_config import qwen3_moe_spec
from oea_trt.plan.config_file import FILE_NAME, read_engine_config, routing_from_engine_config
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.runtime.base import Generation, SamplingOptions, check_prompts, cut_at_end, format_prompts

DEFAULT_K0 = 3


def default_routing(hf_dir: str, k0: Optional[int] = None, k0_schedule=None,
                    layer_k0: Optional[Dict[int, int]] = None) -> RoutingPlan:
    spec = qwen3_moe_spec(hf_dir)
    base = OEAConfig(num_experts=spec.num_experts, top_k=spec.top_k, k0=DEFAULT_K0 if k0 is None else k0,
                     renormalize=spec.norm_topk_prob, k0_schedule=k0_schedule)
    return RoutingPlan(base=base, moe_layers=tuple(spec.moe_layers), layer_k0=dict(layer_k0 or {}))


class HFRuntime:
    backend = "pytorch"

    def __init__(self, model, tokenizer, routing: Optional[RoutingPlan], handle, chat: bool):
        self.model = model
        self.tokenizer = tokenizer
        self.routing = routing          # None when OEA is off (vanilla top-k)
        self.handle = handle            # oea_trt.integrations.hf.OEAHandle (None when OEA is off)
        self.chat = chat

    @classmethod
    def open(cls, path: str, *, k0: Optional[int] = None, k0_schedule=None, layer_k0: Optional[Dict[int, int]] = None,
             oea: bool = True, routing: Optional[RoutingPlan] = None, device: Optional[str] = None,
             dtype=None, chat: bool = False, model=None) -> "HFRuntime":
        """path: an HF Qwen3-MoE directory, or an engine directory whose oea_config.json names
        one (its routing plan is then used). k0 / k0_schedule / layer_k0 override the plan;
        oea=False routes vanilla top-k. `model`: an already-loaded transformers model for `path`."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf_dir = path
        if os.path.isfile(os.path.join(path, FILE_NAME)):
            content = read_engine_config(path)
            hf_dir = (content.get("model") or {}).get("hf_dir") or path
            routing = routing or routing_from_engine_config(content)
        if routing is None:
            routing = default_routing(hf_dir, k0, k0_schedule, layer_k0)
        elif k0 is not None or k0_schedule is not None or layer_k0 is not None:
            routing = routing.with_k0(k0=k0, layer_k0=layer_k0, k0_schedule=k0_schedule)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=dtype if dtype is not None else "auto")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        tokenizer.padding_side = "left"  # generation continues from the right end of every row
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        handle = None
        if oea:
            from oea_trt.integrations.hf import apply_oea

            configs = {layer: routing.config_for_layer(layer) for layer in routing.moe_layers}
            handle = apply_oea(model, configs, mode="generate")
        return cls(model, tokenizer, routing if oea else None, handle, chat)

    def generate(self, prompts: Sequence[str], options: Optional[SamplingOptions] = None) -> List[Generation]:
        import torch

        options = options or SamplingOptions()
        prompts = check_prompts(prompts)
        texts = format_prompts(self.tokenizer, prompts, self.chat)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        sample = options.temperature > 0
        kwargs = dict(max_new_tokens=options.max_new_tokens, do_sample=sample,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if sample:
            kwargs.update(temperature=options.temperature, top_k=options.top_k or None, top_p=options.top_p)
            if options.seed is not None:
                torch.manual_seed(options.seed)
        else:  # greedy; unset the checkpoint's sampling defaults so transformers does not warn
            kwargs.update(temperature=None, top_k=None, top_p=None)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
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
