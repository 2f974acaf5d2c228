"""Fast decode for Qwen3-MoE: our own compact decoder, OEA routing and our MoE kernel in every
MoE layer, a static KV cache and each decode step replayed from one CUDA graph.

    from oea_trt.decode import DecodeEngine, DecodeModel, Sampler, load_hf_model
    model = load_hf_model("/models/Qwen3-30B-A3B", routing=plan, device="cuda")   # or DecodeModel(shape, weights)
    result = DecodeEngine(model).generate(input_ids, attention_mask, max_new_tokens=128, end_ids=[eos])

    shape.py     ModelShape: dimensions and MoE layers (from a Hugging Face config), QWEN3_30B_A3B
    weights.py   ModelWeights in the decode layout; from_hf / to_hf share tensors with transformers
    ops.py       the small operations in PyTorch, rounded as transformers rounds (prefill, CPU, reference)
    fused.py     the same operations fused into two Triton kernels for decode
    model.py     DecodeModel: decode_logits (one step, capturable) and prefill
    cache.py     KVCache and DecodeState: the static buffers a step reads and advances
    sampling.py  Sampler: greedy / temperature / top-k / top-p without host synchronisation
    graph.py     decode_step (forward + choice + bookkeeping) and StepGraph, its CUDA graph
    generate.py  DecodeEngine: prefill, replayed decode steps, DecodeResult with TPOT and T per layer
    loading.py   load_hf_model: a transformers checkpoint directory -> DecodeModel
Triton is imported only when the fused kernels run; transformers only by loading.py and
weights.from_hf / to_hf.
"""
from oea_trt.decode.cache import DecodeState, KVCache
from oea_trt.decode.generate import DecodeEngine, DecodeResult, capacity_for
from oea_trt.decode.loading import load_hf_model
from oea_trt.decode.model import DecodeModel
from oea_trt.decode.sampling import Sampler
from oea_trt.decode.shape import QWEN3_30B_A3B, ModelShape, get_shape
from oea_trt.decode.weights import LayerWeights, ModelWeights, from_hf, to_hf

__all__ = ["QWEN3_30B_A3B", "DecodeEngine", "DecodeModel", "DecodeResult", "DecodeState", "KVCache", "LayerWeights",
           "ModelShape", "ModelWeights", "Sampler", "capacity_for", "from_hf", "get_shape", "load_hf_model", "to_hf"]
