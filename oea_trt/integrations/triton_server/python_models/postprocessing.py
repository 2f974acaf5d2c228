"""Triton Python model `postprocessing` of an OEA repository (written by oea-trt triton-repo).

TOKENS_BATCH (int32 [B, beams, L]) + SEQUENCE_LENGTH (int32 [B, beams]) -> OUTPUT (bytes
[B, beams]): each beam's first SEQUENCE_LENGTH tokens decoded with the Hugging Face tokenizer
(the engine excludes the prompt from its output).
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.skip_special_tokens = params.get("skip_special_tokens", "true").strip().lower() in ("1", "true", "yes")

    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            if tokens.ndim == 2:  # [B, L]: one beam
                tokens, lengths = tokens[:, None, :], lengths.reshape(-1, 1)
            texts = [
                [self.tokenizer.decode(tokens[b, k, : int(lengths[b, k])].tolist(),
                                       skip_special_tokens=self.skip_special_tokens).encode("utf-8")
                 for k in range(tokens.shape[1])]
                for b in range(tokens.shape[0])
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT", np.array(texts, dtype=object)),
            ]))
        return responses
