"""The inputs of a generation run (prompts, model or engine, backend, device, lengths), checked
the same way by `oea-trt generate` and examples/generate.py before anything loads."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from oea_trt.inputs.device import check_device
from oea_trt.inputs.engine_dir import check_engine_dir
from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json
from oea_trt.inputs.model_dir import check_model_dir
from oea_trt.plan.config_file import FILE_NAME as ENGINE_CONFIG
from oea_trt.plan.hf_config import Qwen3MoeSpec


def check_prompts(prompts: Sequence[str]) -> List[str]:
    empty = [i for i, p in enumerate(prompts, 1) if not p]
    if empty:
        raise InputError(f"--prompt number {empty[0]} is empty; a prompt needs at least one character")
    return list(prompts)


def check_backend(backend: str, device: Optional[str]) -> None:
    from oea_trt.runtime import tensorrt_llm_available

    if backend == "tensorrt-llm" and not tensorrt_llm_available():
        raise InputError("--backend tensorrt-llm needs TensorRT-LLM 1.2.1 (NVIDIA's release container); "
                         "use --backend pytorch or auto here")
    if device and backend != "tensorrt-llm":
        check_device(device)


def check_generation_model(path: str, backend: str, what: str = "PATH") -> Qwen3MoeSpec:
    """The Qwen3MoeSpec of the model that will run (an engine directory: the one it was built from)."""
    from oea_trt.runtime import tensorrt_llm_available

    engine_config = os.path.join(path, ENGINE_CONFIG)
    if os.path.isfile(engine_config):
        on_engine = backend == "tensorrt-llm" or (backend == "auto" and tensorrt_llm_available())
        if on_engine:
            check_engine_dir(path, what)
        hf_dir = (read_json(engine_config, what).get("model") or {}).get("hf_dir")
        if not hf_dir:
            raise InputError(f"{engine_config} names no Hugging Face directory (model.hf_dir), which holds the "
                             "tokenizer; rebuild with `oea-trt build`")
        return check_model_dir(hf_dir, f"the Hugging Face directory of engine {path}", weights=not on_engine,
                               tokenizer=True)
    if backend == "tensorrt-llm":
        check_engine_dir(path, what)  # says why PATH is not an engine
    return check_model_dir(path, what, tokenizer=True)


def check_against_model(spec: Qwen3MoeSpec, k0: Optional[int], max_new_tokens: int) -> None:
    if k0 is not None and k0 > spec.top_k:
        raise InputError(f"--k0 must be in [1, top_k={spec.top_k}] for this model, got {k0}")
    if spec.max_position_embeddings and max_new_tokens >= spec.max_position_embeddings:
        raise InputError(f"--max-new-tokens must be below the model's max_position_embeddings="
                         f"{spec.max_position_embeddings} (prompt included), got {max_new_tokens}")
