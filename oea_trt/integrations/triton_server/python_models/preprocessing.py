"""Triton Python model `preprocessing` of an OEA repository (written by oea-trt triton-repo).

QUERY (bytes [B, 1]) + REQUEST_OUTPUT_LEN -> INPUT_ID (int32 [B, L], right-padded with the pad
id), REQUEST_INPUT_LEN (int32 [B, 1]), REQUEST_OUTPUT_LEN, OUT_END_ID / OUT_PAD_ID (int32 [B, 1])
from the Hugging Face tokenizer in the `tokenizer_dir` parameter.

A request is answered with an error instead, before it reaches the engine, when a prompt
tokenizes to nothing (the backend would pass a zero-length input to the executor), when it is
longer than the engine's `max_input_len` parameter (the longest prompt the engine was built for),
when it asks for fewer than one new token, or when it carries fields that are no input of the
ensemble: Triton passes those on as request parameters that nothing reads, so a misspelt
sampling field (random_seed for seed) would otherwise be dropped without a word.
Written for the Python and numpy of the stub that runs it: Python 3.8+, numpy 1.x or 2.x.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


#: Request parameters that a later model reads (the tensorrtllm backend's request_type); names
#: starting with "triton_" are Triton's own.
READ_PARAMETERS = frozenset({"request_type"})


def _flag(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t")


def _text(query) -> str:
    # BYTES elements arrive as bytes; a str element (object array built by hand) is taken as is.
    return query.decode("utf-8") if isinstance(query, (bytes, np.bytes_)) else str(query)


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[],
                                      error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.add_special_tokens = _flag(params.get("add_special_tokens", "false"))
        self.request_fields = [f for f in params.get("request_fields", "").split(",") if f]
        limit = params.get("max_input_len", "").strip()
        self.max_input_len = int(limit) if limit else None
        self.end_id = self.tokenizer.eos_token_id
        if self.end_id is None:
            raise ValueError(f"tokenizer in {params['tokenizer_dir']} has no eos token; the engine needs an end id")
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.end_id if pad is None else pad

    def _encode(self, query):
        return self.tokenizer.encode(_text(query), add_special_tokens=self.add_special_tokens)

    def _unread_fields(self, request):
        parameters = json.loads(request.parameters() or "{}")
        return sorted(k for k in parameters if k not in READ_PARAMETERS and not k.startswith("triton_"))

    def _check(self, request, ids, out_len):
        """The reason this request must not reach the engine, or None."""
        unread = self._unread_fields(request)
        if unread:
            return (f"request field(s) {', '.join(repr(f) for f in unread)} are read by no model of this "
                    f"repository; its fields are {', '.join(self.request_fields)}")
        if not ids:
            return "the request holds no text_input"
        for row, tokens in enumerate(ids):
            name = "text_input" if len(ids) == 1 else f"text_input[{row}]"
            if not tokens:
                return f"{name} is empty (0 tokens); the engine needs a prompt of at least 1 token"
            if self.max_input_len is not None and len(tokens) > self.max_input_len:
                return (f"{name} is {len(tokens)} tokens; the engine takes prompts of at most "
                        f"max_input_len={self.max_input_len} tokens: shorten it")
        if out_len.size and int(out_len.min()) < 1:
            return f"max_tokens must be at least 1, got {int(out_len.min())}"
        return None

    def _respond(self, request):
        query = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
        out_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy()
        ids = [self._encode(q) for q in query]
        problem = self._check(request, ids, out_len)
        if problem is not None:
            return _error(problem)
        batch, width = len(ids), max(len(t) for t in ids)
        input_id = np.full((batch, width), self.pad_id, dtype=np.int32)
        for row, tokens in enumerate(ids):
            input_id[row, : len(tokens)] = tokens
        lengths = np.array([[len(t)] for t in ids], dtype=np.int32)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("INPUT_ID", input_id),
            pb_utils.Tensor("REQUEST_INPUT_LEN", lengths),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", out_len.astype(np.int32).reshape(batch, -1)),
            pb_utils.Tensor("OUT_END_ID", np.full((batch, 1), self.end_id, dtype=np.int32)),
            pb_utils.Tensor("OUT_PAD_ID", np.full((batch, 1), self.pad_id, dtype=np.int32)),
        ])

    def execute(self, requests):
        return [self._respond(request) for request in requests]
