"""A stand-in for TensorRT-LLM's `tensorrtllm` Triton backend, run by tests/test_triton_server.py
as a Python-based backend: the test copies this file to <backend dir>/tensorrtllm/model.py, so the
generated tensorrt_llm model (`backend: "tensorrtllm"`) loads it without any edit.

It reads a request the way the real backend of TensorRT-LLM 1.2.1 does
(triton_backend/inflight_batcher_llm/src/utils.{h,cc}: readInputsTensors, splitBatchInputsTensors,
createRequestsFromInputTensors, getSamplingConfigFromTensors) and answers with an error where the
real one would misread it silently:
- every input is a name the backend reads (InputFieldsNames); Triton forwards a tensor under any
  other name and the backend ignores it, which is how a `random_seed` got lost;
- every input has the data type whose bytes the backend reinterprets (extractSingleton<T> does not
  look at the Triton type: a seed sent as INT32 would be read as 8 bytes of uint64);
- singletons hold exactly one value; input_ids is [1, L] (batch > 1 needs decoupled mode) with
  1 <= L <= the engine's max_input_len, and input_lengths says L; request_output_len >= 1;
- `streaming` true needs a decoupled model (the backend's own check).
It generates the prompt's ids repeated to request_output_len tokens and answers like the real
backend (model_instance_state.cc fillTritonResponse): output_ids int32 [1, beams, L] and
sequence_length int32 [1, beams], which must both be requested; in decoupled mode with streaming,
one response per token, the last one final. Each request's inputs (dtype, shape, values) go to
requests.jsonl beside this file, for the test's own asserts, with the Python, numpy and
transformers versions of the stub that ran it (the same environment as our Python models').
"""
import json
import os
import platform
import threading
from importlib import metadata

import numpy as np
import triton_python_backend_utils as pb_utils

#: Inputs the backend reads (utils.h InputFieldsNames) for plain text generation, with the type
#: utils.cc reads their bytes as; the stand-in refuses any other name. (The backend's own
#: config.pbtxt declares runtime_top_p_min, but the code reads runtime_top_k_min.)
READ_AS = {
    "input_ids": np.int32, "input_lengths": np.int32, "request_output_len": np.int32,
    "end_id": np.int32, "pad_id": np.int32, "beam_width": np.int32, "num_return_sequences": np.int32,
    "runtime_top_k": np.int32, "runtime_top_p": np.float32, "runtime_top_k_min": np.float32,
    "runtime_top_p_decay": np.float32, "runtime_top_p_reset_ids": np.int32,
    "temperature": np.float32, "len_penalty": np.float32, "early_stopping": np.int32,
    "repetition_penalty": np.float32, "min_tokens": np.int32, "beam_search_diversity_rate": np.float32,
    "presence_penalty": np.float32, "frequency_penalty": np.float32, "seed": np.uint64,
    "no_repeat_ngram_size": np.int32,
    "return_log_probs": np.bool_, "return_context_logits": np.bool_, "return_generation_logits": np.bool_,
    "return_perf_metrics": np.bool_, "exclude_input_in_output": np.bool_,
    "stop_words_list": np.int32, "bad_words_list": np.int32, "embedding_bias": np.float32,
    "streaming": np.bool_, "stop": np.bool_,
}
SINGLETONS = frozenset(READ_AS) - {"input_ids", "stop_words_list", "bad_words_list", "embedding_bias"}
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class RequestError(ValueError):
    pass


def _flag(text) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.exclude_input = _flag(params.get("exclude_input_in_output", "false"))
        engine_dir = params.get("gpt_model_path", "")
        engine_config = os.path.join(engine_dir, "config.json")
        if not os.path.isfile(engine_config) or not os.path.isfile(os.path.join(engine_dir, "rank0.engine")):
            raise ValueError(f"gpt_model_path={engine_dir!r} is not an engine directory (config.json, rank0.engine)")
        if params.get("gpt_model_type") != "inflight_fused_batching":
            raise ValueError(f"gpt_model_type must be inflight_fused_batching, got {params.get('gpt_model_type')!r}")
        with open(engine_config) as f:
            build = json.load(f)["build_config"]
        self.max_input_len = int(build["max_input_len"])
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requests.jsonl")
        self.log_lock = threading.Lock()
        self.stub = {"python": platform.python_version(), "numpy": np.__version__,
                     "transformers": metadata.version("transformers")}

    # ---- reading a request as the backend does ----------------------------------------------------

    def _read(self, request):
        inputs = {t.name(): t.as_numpy() for t in request.inputs()}
        record = {name: {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist()}
                  for name, a in inputs.items()}
        return inputs, record

    def _check(self, inputs):
        for name, array in inputs.items():
            if name not in READ_AS:
                raise RequestError(f"input {name!r} is read by no code of the tensorrtllm backend")
            if array.dtype != np.dtype(READ_AS[name]):
                raise RequestError(f"input {name!r} is {array.dtype}; the backend reads its bytes as "
                                   f"{np.dtype(READ_AS[name])}")
            if name in SINGLETONS and array.size != 1:
                raise RequestError(f"Invalid size for tensor {name}: {array.size} values, shape {list(array.shape)}")
        for name in ("input_ids", "input_lengths", "request_output_len"):
            if name not in inputs:
                raise RequestError(f"{name} is not present in the request")
        ids = inputs["input_ids"]
        if ids.ndim != 2:
            raise RequestError(f"Expected inputTokens tensors to have 2 dimensions, got shape {list(ids.shape)}")
        if ids.shape[0] != 1 and not self.decoupled:
            raise RequestError("Batch size > 1 requires the tensorrt_llm backend to be using decoupled "
                               "transaction policy")
        if not 1 <= ids.shape[1] <= self.max_input_len:
            raise RequestError(f"input_ids holds {ids.shape[1]} tokens; the engine takes 1 to "
                               f"max_input_len={self.max_input_len}")
        if int(inputs["input_lengths"].reshape(-1)[0]) != ids.shape[1]:
            raise RequestError(f"input_lengths={int(inputs['input_lengths'].reshape(-1)[0])} but input_ids "
                               f"holds {ids.shape[1]} tokens")
        if int(inputs["request_output_len"].reshape(-1)[0]) < 1:
            raise RequestError("request_output_len must be at least 1")
        streaming = "streaming" in inputs and bool(inputs["streaming"].reshape(-1)[0])
        if streaming and not self.decoupled:
            raise RequestError("Streaming is only supported if model is deployed using decoupled mode.")
        return streaming

    # ---- answering as the backend does ------------------------------------------------------------

    def _generate(self, inputs):
        prompt = inputs["input_ids"].reshape(-1).tolist()
        count = int(inputs["request_output_len"].reshape(-1)[0])
        generated = [prompt[i % len(prompt)] for i in range(count)]
        return generated if self.exclude_input else prompt + generated

    @staticmethod
    def _response(request, tokens):
        requested = set(request.requested_output_names())
        for name in ("output_ids", "sequence_length"):
            if name not in requested:
                raise RequestError(f"{name} tensor must be present in list of output tensors")
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("output_ids", np.array(tokens, dtype=np.int32).reshape(1, 1, -1)),
            pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
        ])

    def _log(self, record, problem):
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(json.dumps({"inputs": record, "error": problem, "decoupled": self.decoupled,
                                "stub": self.stub}) + "\n")

    def _serve(self, request):
        """[(response, flags)] for one request."""
        inputs, record = self._read(request)
        try:
            streaming = self._check(inputs)
            tokens = self._generate(inputs)
            if streaming:
                answer = [(self._response(request, [t]), FINAL if i == len(tokens) - 1 else 0)
                          for i, t in enumerate(tokens)]
            else:
                answer = [(self._response(request, tokens), FINAL)]
        except RequestError as exc:
            self._log(record, str(exc))
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            return [(pb_utils.InferenceResponse(output_tensors=[], error=error), FINAL)]
        self._log(record, None)
        return answer

    def execute(self, requests):
        if not self.decoupled:
            return [self._serve(request)[0][0] for request in requests]
        for request in requests:
            sender = request.get_response_sender()
            for response, flags in self._serve(request):
                sender.send(response, flags=flags)
        return None
