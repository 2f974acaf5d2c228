"""The four model configs of an OEA Triton repository (our own, for the tensorrtllm backend).

ensemble (text in, text out) -> preprocessing (our Python model: tokenize) -> tensorrt_llm
(TensorRT-LLM's C++ backend running the OEA engine, in-flight batching) -> postprocessing (our
Python model: detokenize). Tensor names of the tensorrt_llm model and its parameters
(gpt_model_type, gpt_model_path, batch_scheduler_policy, kv_cache_free_gpu_mem_fraction, ...)
are the ones the backend reads (InputFieldsNames in inflight_batcher_llm/src/utils.h of
TensorRT-LLM's triton_backend, and all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt);
the ensemble's outer names (text_input, max_tokens, temperature, top_k, top_p, seed, stream,
text_output) match the backend's usual ensemble, so its clients and Triton's
/v2/models/ensemble/generate endpoint work unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from oea_trt.integrations.triton_server.pbtxt import Enum

#: Request tensors the tensorrtllm backend reads (InputFieldsNames, kStopInputTensorName and
#: kStreamingInputTensorName in triton_backend/inflight_batcher_llm/src/utils.h of 1.2-era
#: TensorRT-LLM). Triton forwards an input under any other name and the backend ignores it.
TENSORRTLLM_BACKEND_INPUTS = frozenset({
    "input_ids", "encoder_input_features", "encoder_output_lengths", "input_lengths", "decoder_input_ids",
    "request_output_len", "no_repeat_ngram_size", "num_return_sequences", "end_id", "pad_id", "bad_words_list",
    "stop_words_list", "embedding_bias", "context_phase_params", "cross_attention_mask", "skip_cross_attn_blocks",
    "multimodal_embedding", "multimodal_hashes", "multimodal_positions", "multimodal_lengths",
    "return_log_probs", "return_generation_logits", "return_context_logits",
    "exclude_input_in_output", "return_perf_metrics", "return_kv_cache_reuse_stats", "beam_width",
    "runtime_top_k", "runtime_top_p", "runtime_top_k_min", "runtime_top_p_decay", "runtime_top_p_reset_ids",
    "temperature", "len_penalty", "early_stopping", "repetition_penalty", "min_tokens",
    "beam_search_diversity_rate", "presence_penalty", "frequency_penalty", "seed", "prompt_embedding_table",
    "prompt_table_extra_ids", "mrope_rotary_cos_sin", "mrope_position_deltas", "lora_task_id", "lora_weights",
    "lora_config", "draft_input_ids", "draft_logits", "draft_acceptance_threshold",
    "retention_token_range_starts", "retention_token_range_ends", "retention_token_range_priorities",
    "retention_token_range_durations_ms", "retention_decode_priority", "retention_decode_duration_ms",
    "guided_decoding_guide_type", "guided_decoding_guide", "lookahead_window_size", "lookahead_ngram_size",
    "lookahead_verification_set_size", "stop", "streaming",
})

#: Where NVIDIA's Triton TensorRT-LLM container installs the executor worker (orchestrator mode).
EXECUTOR_WORKER_PATH = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"


@dataclasses.dataclass
class RepoSettings:
    engine_dir: str                 # absolute path of the TensorRT-LLM engine directory
    tokenizer_dir: str              # absolute path of the HF model directory (tokenizer files)
    max_batch_size: int = 64
    max_input_len: Optional[int] = None  # the engine's longest prompt; preprocessing refuses longer
    decoupled: bool = False         # streaming responses (token by token)
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: str = "guaranteed_no_evict"
    enable_chunked_context: bool = False
    max_beam_width: int = 1
    preprocessing_instances: int = 1
    postprocessing_instances: int = 1
    max_queue_delay_microseconds: int = 0
    world_size: int = 1


def _tensor(name: str, dtype: str, dims: List[int], *, optional: bool = False, ragged: bool = False,
            reshape: Optional[List[int]] = None) -> Dict[str, Any]:
    t: Dict[str, Any] = {"name": name, "data_type": Enum(dtype), "dims": dims}
    if reshape is not None:
        t["reshape"] = {"shape": reshape}
    if optional:
        t["optional"] = True
    if ragged:
        t["allow_ragged_batch"] = True
    return t


def _params(values: Dict[str, Any]) -> Dict[str, Dict[str, str]]:
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return {k: {"string_value": text(v)} for k, v in values.items()}


def _scalar_in(name, dtype, optional=True):
    # Per-request scalars arrive as [1] and the backend wants them as scalars.
    return _tensor(name, dtype, [1], optional=optional, reshape=[])


def tensorrt_llm_config(s: RepoSettings) -> Dict[str, Any]:
    params = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": s.engine_dir,
        "max_beam_width": s.max_beam_width,
        "batch_scheduler_policy": s.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": s.kv_cache_free_gpu_mem_fraction,
        "exclude_input_in_output": True,
        "enable_chunked_context": s.enable_chunked_context,
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
    }
    if s.world_size > 1:
        params["executor_worker_path"] = EXECUTOR_WORKER_PATH
    return {
        "name": "tensorrt_llm",
        "backend": "tensorrtllm",
        "max_batch_size": s.max_batch_size,
        "model_transaction_policy": {"decoupled": s.decoupled},
        "dynamic_batching": {"preferred_batch_size": [s.max_batch_size],
                             "max_queue_delay_microseconds": s.max_queue_delay_microseconds},
        "input": [
            _tensor("input_ids", "TYPE_INT32", [-1], ragged=True),
            _scalar_in("input_lengths", "TYPE_INT32", optional=False),
            _scalar_in("request_output_len", "TYPE_INT32", optional=False),
            _scalar_in("end_id", "TYPE_INT32"),
            _scalar_in("pad_id", "TYPE_INT32"),
            _tensor("stop_words_list", "TYPE_INT32", [2, -1], optional=True, ragged=True),
            _tensor("bad_words_list", "TYPE_INT32", [2, -1], optional=True, ragged=True),
            _scalar_in("beam_width", "TYPE_INT32"),
            _scalar_in("temperature", "TYPE_FP32"),
            _scalar_in("runtime_top_k", "TYPE_INT32"),
            _scalar_in("runtime_top_p", "TYPE_FP32"),
            # The backend reads `seed` (older releases read `random_seed`); Triton accepts a tensor
            # under a name the backend never reads, so a wrong name silently drops the user's seed.
            _scalar_in("seed", "TYPE_UINT64"),
            _scalar_in("return_log_probs", "TYPE_BOOL"),
            _scalar_in("streaming", "TYPE_BOOL"),
        ],
        "output": [
            _tensor("output_ids", "TYPE_INT32", [-1, -1]),
            _tensor("sequence_length", "TYPE_INT32", [-1]),
            _tensor("cum_log_probs", "TYPE_FP32", [-1]),
            _tensor("output_log_probs", "TYPE_FP32", [-1, -1]),
        ],
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
        "parameters": _params(params),
    }


def ensemble_inputs(s: RepoSettings) -> List[Dict[str, Any]]:
    """The request fields of the ensemble (what /v2/models/ensemble/generate takes)."""
    inputs = [
        _tensor("text_input", "TYPE_STRING", [1]),
        _tensor("max_tokens", "TYPE_INT32", [1]),
        _tensor("temperature", "TYPE_FP32", [1], optional=True),
        _tensor("top_k", "TYPE_INT32", [1], optional=True),
        _tensor("top_p", "TYPE_FP32", [1], optional=True),
        _tensor("seed", "TYPE_UINT64", [1], optional=True),
    ]
    if s.decoupled:
        inputs.append(_tensor("stream", "TYPE_BOOL", [1], optional=True))
    return inputs


def preprocessing_config(s: RepoSettings) -> Dict[str, Any]:
    # Triton hands a request's fields that match no input to every model as request parameters,
    # where nothing reads them; preprocessing refuses them and names the fields that exist.
    params: Dict[str, Any] = {"tokenizer_dir": s.tokenizer_dir, "add_special_tokens": False,
                              "request_fields": ",".join(t["name"] for t in ensemble_inputs(s))}
    if s.max_input_len is not None:
        params["max_input_len"] = s.max_input_len
    return {
        "name": "preprocessing",
        "backend": "python",
        "max_batch_size": s.max_batch_size,
        "input": [
            _tensor("QUERY", "TYPE_STRING", [1]),
            _tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", [1]),
        ],
        "output": [
            _tensor("INPUT_ID", "TYPE_INT32", [-1]),
            _tensor("REQUEST_INPUT_LEN", "TYPE_INT32", [1]),
            _tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", [1]),
            _tensor("OUT_END_ID", "TYPE_INT32", [1]),
            _tensor("OUT_PAD_ID", "TYPE_INT32", [1]),
        ],
        "instance_group": [{"count": s.preprocessing_instances, "kind": Enum("KIND_CPU")}],
        "parameters": _params(params),
    }


def postprocessing_config(s: RepoSettings) -> Dict[str, Any]:
    return {
        "name": "postprocessing",
        "backend": "python",
        "max_batch_size": s.max_batch_size,
        "input": [
            _tensor("TOKENS_BATCH", "TYPE_INT32", [-1, -1]),
            _tensor("SEQUENCE_LENGTH", "TYPE_INT32", [-1]),
        ],
        "output": [_tensor("OUTPUT", "TYPE_STRING", [-1])],
        "instance_group": [{"count": s.postprocessing_instances, "kind": Enum("KIND_CPU")}],
        "parameters": _params({"tokenizer_dir": s.tokenizer_dir, "skip_special_tokens": True}),
    }


def ensemble_config(s: RepoSettings) -> Dict[str, Any]:
    trt_inputs = {
        "input_ids": "_INPUT_ID",
        "input_lengths": "_REQUEST_INPUT_LEN",
        "request_output_len": "_REQUEST_OUTPUT_LEN",
        "end_id": "_END_ID",
        "pad_id": "_PAD_ID",
        "temperature": "temperature",
        "runtime_top_k": "top_k",
        "runtime_top_p": "top_p",
        "seed": "seed",
    }
    if s.decoupled:
        trt_inputs["streaming"] = "stream"
    return {
        "name": "ensemble",
        "platform": "ensemble",
        "max_batch_size": s.max_batch_size,
        "input": ensemble_inputs(s),
        "output": [_tensor("text_output", "TYPE_STRING", [-1])],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": "preprocessing",
                    "model_version": -1,
                    "input_map": {"QUERY": "text_input", "REQUEST_OUTPUT_LEN": "max_tokens"},
                    "output_map": {
                        "INPUT_ID": "_INPUT_ID",
                        "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
                        "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
                        "OUT_END_ID": "_END_ID",
                        "OUT_PAD_ID": "_PAD_ID",
                    },
                },
                {
                    "model_name": "tensorrt_llm",
                    "model_version": -1,
                    "input_map": trt_inputs,
                    "output_map": {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"},
                },
                {
                    "model_name": "postprocessing",
                    "model_version": -1,
                    "input_map": {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
                    "output_map": {"OUTPUT": "text_output"},
                },
            ]
        },
    }


def all_configs(s: RepoSettings) -> Dict[str, Dict[str, Any]]:
    return {
        "ensemble": ensemble_config(s),
        "preprocessing": preprocessing_config(s),
        "tensorrt_llm": tensorrt_llm_config(s),
        "postprocessing": postprocessing_config(s),
    }
