"""Triton Python model `preprocessing` of an OEA repository (written by oea-trt triton-repo).

QUERY (bytes [B, 1]) + REQUEST_OUTPUT_LEN -> INPUT_ID (int32 [B, L], right-padded with the pad
id), REQUEST_INPUT_LEN (int32 [B, 1]), REQUEST_OUTPUT_LEN, OUT_END_ID / OUT_PAD_ID (int32 [B, 1])
from the Hugging Face tokenizer in the `tokenizer_dir` parameter.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


def _flag(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.add_special_tokens = _flag(params.get("add_special_tokens", "false"))
        self.end_id = self.tokenizer.eos_token_id
        if self.end_id is None:
            raise ValueError(f"tokenizer in {params['tokenizer_dir']} has no eos token; the engine needs an end id")
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.end_id if pad is None else pad

    def _encode(self, text: bytes):
        return self.tokenizer.encode(text.decode("utf-8"), add_special_tokens=self.add_special_tokens)

    def execute(self, requests):
        responses = []
        for request in requests:
            query = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            out_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy()
            ids = [self._encode(q) for q in query]
            width = max(1, max(len(t) for t in ids))
            input_id = np.full((len(ids), width), self.pad_id, dtype=np.int32)
            for row, tokens in enumerate(ids):
                input_id[row, : len(tokens)] = tokens
            lengths = np.array([[len(t)] for t in ids], dtype=np.int32)
            batch = len(ids)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("INPUT_ID", input_id),
                pb_utils.Tensor("REQUEST_INPUT_LEN", lengths),
                pb_utils.Tensor("REQUEST_OUTPUT_LEN", out_len.astype(np.int32).reshape(batch, -1)),
                pb_utils.Tensor("OUT_END_ID", np.full((batch, 1), self.end_id, dtype=np.int32)),
                pb_utils.Tensor("OUT_PAD_ID", np.full((batch, 1), self.pad_id, dtype=np.int32)),
            ]))
        return responses
