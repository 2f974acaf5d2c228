"""Run an OEA TensorRT-LLM 1.2.1 engine from Python (tensorrt_llm.runtime.ModelRunnerCpp).

    rt = EngineRuntime.open("/engines/qwen3-30b-oea", k0=4)   # k0 override at load
    for g in rt.generate(["The capital of France is"], SamplingOptions(max_new_tokens=32)):
        print(g.text)

open() reads oea_config.json (routing plan, the HF directory for the tokenizer), registers the
plugin in this process, sets its load-time k0 override (oea_trt.plugin.set_k0_override: every
OeaRouting layer applies it when the engine is deserialized), then creates the runner. Multi-GPU engines: start the
script with `mpirun -n <world_size> python script.py`; every rank calls open() (which loads the
plugin in that rank) and rank 0 receives the outputs.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from oea_trt.routing.config import ConfigError
from oea_trt.plan.config_file import read_engine_config, routing_from_engine_config
from oea_trt.runtime.base import Generation, SamplingOptions, check_prompts, cut_at_end, format_prompts
from oea_trt.plugin import load_plugin, set_k0_override


class EngineRuntime:
    backend = "tensorrt-llm"

    def __init__(self, runner, tokenizer, routing, engine_dir: str, end_id: int, pad_id: int, chat: bool,
                 rank: int):
        self.runner = runner
        self.tokenizer = tokenizer
        self.routing = routing
        self.engine_dir = engine_dir
        self.end_id = end_id
        self.pad_id = pad_id
        self.chat = chat
        self.rank = rank

    @classmethod
    def open(cls, engine_dir: str, hf_dir: Optional[str] = None, *, k0: Optional[int] = None,
             k0_schedule=None, plugin_library: Optional[str] = None, chat: bool = False,
             **runner_kwargs) -> "EngineRuntime":
        """runner_kwargs go to ModelRunnerCpp.from_dir (max_batch_size, max_input_len,
        max_output_len, kv_cache_free_gpu_memory_fraction, ...)."""
        content = read_engine_config(engine_dir)
        routing = routing_from_engine_config(content)
        if k0 is not None or k0_schedule is not None:
            routing = routing.with_k0(k0=k0, k0_schedule=k0_schedule)
            for layer in routing.moe_layers:  # the plugin would refuse these at load; say it here
                routing.config_for_layer(layer)
        hf_dir = hf_dir or (content.get("model") or {}).get("hf_dir")
        if not hf_dir or not os.path.isdir(hf_dir):
            raise FileNotFoundError(
                f"tokenizer directory {hf_dir!r} not found: pass hf_dir= (the Hugging Face model directory)"
            )
        load_plugin(plugin_library)
        # Every open() sets it (None, None clears an earlier open()'s override in this process).
        set_k0_override(k0, k0_schedule, plugin_library)
        import tensorrt_llm
        from tensorrt_llm.runtime import ModelRunnerCpp
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        end_id = tokenizer.eos_token_id
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
        rank = tensorrt_llm.mpi_rank()
        runner = ModelRunnerCpp.from_dir(engine_dir, rank=rank, **runner_kwargs)
        return cls(runner, tokenizer, routing, engine_dir, end_id, pad_id, chat, rank)

    def generate(self, prompts: Sequence[str], options: Optional[SamplingOptions] = None) -> List[Generation]:
        """Generate for every prompt (one in-flight batch). Non-zero MPI ranks return []."""
        import torch

        options = options or SamplingOptions()
        prompts = check_prompts(prompts)
        texts = format_prompts(self.tokenizer, prompts, self.chat)
        batch = [torch.tensor(self.tokenizer.encode(t), dtype=torch.int32) for t in texts]
        sampling = {"temperature": options.temperature if options.temperature > 0 else 1.0,
                    "top_k": options.top_k if options.temperature > 0 else 1,
                    "top_p": options.top_p}
        if options.seed is not None:
            sampling["random_seed"] = options.seed
        out = self.runner.generate(batch, max_new_tokens=options.max_new_tokens, end_id=self.end_id,
                                   pad_id=self.pad_id, return_dict=True, output_sequence_lengths=True,
                                   **sampling)
        if self.rank != 0 or not out:
            return []
        torch.cuda.synchronize()
        output_ids, lengths = out["output_ids"], out["sequence_lengths"]
        results = []
        for i, prompt in enumerate(prompts):
            # Output rows hold the prompt, then the generated tokens, up to sequence_lengths.
            begin, end = len(batch[i]), int(lengths[i][0])
            ids, finished = cut_at_end(output_ids[i][0][begin:end].tolist(), {self.end_id})
            finished = finished or end - begin < options.max_new_tokens
            results.append(Generation(prompt, self.tokenizer.decode(ids, skip_special_tokens=True), ids, finished))
        return results

    def close(self) -> None:
        self.runner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["EngineRuntime", "ConfigError"]
