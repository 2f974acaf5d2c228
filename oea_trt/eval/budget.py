"""What an evaluation needs in memory, at the least, checked before the model is loaded.

Lower bounds only (the weights in the compute dtype, one forward call's float32 log-probabilities,
the token ids and, with --dump-traces, the router logits kept on the host): a run refused here
could not have finished, and a run that passes may still need more for activations.
"""
from __future__ import annotations

import os

from oea_trt.inputs import check_fits, weight_files
from oea_trt.plan.hf_config import DTYPE_BYTES, Qwen3MoeSpec


def weights_bytes(model_dir: str, spec: Qwen3MoeSpec, dtype: str) -> int:
    stored = DTYPE_BYTES.get(spec.torch_dtype, 2)
    on_disk = sum(os.path.getsize(f) for f in weight_files(model_dir))
    return on_disk // stored * DTYPE_BYTES[dtype]


def check_eval_fits(model_dir: str, spec: Qwen3MoeSpec, *, device: str, dtype: str, sequences: int, length: int,
                    chunk: int, traces: bool) -> None:
    """InputError (via check_fits) when the evaluation cannot fit on `device` and the host."""
    weights = weights_bytes(model_dir, spec, dtype)
    logits = chunk * length * max(spec.vocab_size, 1) * 4
    host = sequences * length * 8
    if traces:
        host += len(spec.moe_layers) * sequences * length * spec.num_experts * 4
    what = (f"this evaluation ({sequences} sequences x {length} tokens, {chunk} per forward pass"
            f"{', router traces kept' if traces else ''})")
    fix = "use fewer --sequences, a smaller --length or --forward-batch (or --batch), or drop --dump-traces"
    if device.startswith("cuda"):
        check_fits(weights + logits, what, fix, device=device)
        check_fits(host, what, fix)
    else:
        check_fits(weights + logits + host, what, fix)
