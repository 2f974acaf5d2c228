"""Read a Hugging Face Qwen3-MoE config.json into the facts the builder and runtimes need.

Plain Python (no transformers, no TensorRT-LLM) so CI can check the mapping on the real
Qwen3-30B-A3B / 235B-A22B configs (tests/data/). Field names and defaults follow
transformers' Qwen3MoeConfig; which layers are MoE follows Qwen3MoeDecoderLayer:
layer i is sparse iff i not in mlp_only_layers and num_experts > 0 and
(i + 1) % decoder_sparse_step == 0.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from oea_trt.moe.shapes import MoEShape


class HFConfigError(ValueError):
    """The Hugging Face config is missing a field, has a wrong value, or is not Qwen3-MoE."""


#: Element size of each dtype the builder accepts (weights of one expert = 3 * H * I * size).
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

_ARCHITECTURE = "Qwen3MoeForCausalLM"
#: Field -> the name transformers 5.x saves it under (Qwen3MoeConfig.attribute_map).
_ALIASES = {"num_experts": "num_local_experts", "torch_dtype": "dtype"}
_MODEL_TYPE = "qwen3_moe"


@dataclasses.dataclass(frozen=True)
class Qwen3MoeSpec:
    """What a Qwen3-MoE checkpoint is, as far as routing and engine building care."""

    architecture: str
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int          # dense MLP width (used only by mlp_only_layers)
    moe_intermediate_size: int      # one expert's SwiGLU width I
    num_experts: int                # E
    top_k: int                      # num_experts_per_tok, k
    norm_topk_prob: bool            # HF renormalizes the top-k weights -> OEA renormalize
    norm_topk_prob_given: bool      # False when config.json omits it (HF default False applies)
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str
    decoder_sparse_step: int
    mlp_only_layers: Tuple[int, ...]
    tie_word_embeddings: bool
    eos_token_id: Optional[int]

    @property
    def moe_layers(self) -> List[int]:
        """Indices of the decoder layers whose MLP is a sparse MoE block (HF's rule)."""
        return [
            i for i in range(self.num_hidden_layers)
            if i not in self.mlp_only_layers
            and self.num_experts > 0
            and (i + 1) % self.decoder_sparse_step == 0
        ]

    @property
    def dense_layers(self) -> List[int]:
        moe = set(self.moe_layers)
        return [i for i in range(self.num_hidden_layers) if i not in moe]

    def moe_shape(self, dtype: str) -> MoEShape:
        """The layer shape in the project's one MoEShape type (expert_bytes lives there)."""
        if dtype not in DTYPE_BYTES:
            raise HFConfigError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
        return MoEShape(
            name=f"{self.architecture}:{self.num_hidden_layers}L",
            num_experts=self.num_experts,
            top_k=self.top_k,
            hidden_size=self.hidden_size,
            moe_intermediate_size=self.moe_intermediate_size,
            num_moe_layers=len(self.moe_layers),
            norm_topk_prob=self.norm_topk_prob,
            weight_bytes=DTYPE_BYTES[dtype],
        )


def _require(cfg: Dict[str, Any], key: str, kind, where: str):
    if key not in cfg:
        raise HFConfigError(f"{where}: missing field {key!r} (a Qwen3-MoE config.json has it)")
    value = cfg[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HFConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    elif kind is bool and not isinstance(value, bool):
        raise HFConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def load_hf_config(source: Union[str, os.PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    """config.json of an HF model directory (or the file itself, or an already-parsed dict)."""
    if isinstance(source, dict):
        return dict(source)
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise HFConfigError(
            f"no Hugging Face config at {path}: pass a model directory containing config.json"
        )
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise HFConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(cfg, dict):
        raise HFConfigError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def qwen3_moe_spec(source: Union[str, os.PathLike, Dict[str, Any]]) -> Qwen3MoeSpec:
    """Validate a Qwen3-MoE config and return its Qwen3MoeSpec (HFConfigError on any problem)."""
    where = "config" if isinstance(source, dict) else os.fspath(source)
    cfg = load_hf_config(source)
    for name, alias in _ALIASES.items():  # transformers 5.x writes some fields under new names
        if name not in cfg and alias in cfg:
            cfg[name] = cfg[alias]
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type != _MODEL_TYPE and _ARCHITECTURE not in archs:
        raise HFConfigError(
            f"{where}: model_type {model_type!r} / architectures {archs} is not Qwen3-MoE "
            f"(expected model_type {_MODEL_TYPE!r}, architecture {_ARCHITECTURE!r})"
        )
    layers = _require(cfg, "num_hidden_layers", int, where)
    hidden = _require(cfg, "hidden_size", int, where)
    heads = _require(cfg, "num_attention_heads", int, where)
    num_experts = _require(cfg, "num_experts", int, where)
    top_k = _require(cfg, "num_experts_per_tok", int, where)
    moe_inter = _require(cfg, "moe_intermediate_size", int, where)
    if top_k > num_experts:
        raise HFConfigError(
            f"{where}: num_experts_per_tok must be in [1, num_experts={num_experts}], got {top_k}"
        )
    norm_given = "norm_topk_prob" in cfg
    norm = cfg.get("norm_topk_prob", False)  # transformers' Qwen3MoeConfig default
    if not isinstance(norm, bool):
        raise HFConfigError(f"{where}: norm_topk_prob must be true or false, got {norm!r}")
    step = cfg.get("decoder_sparse_step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise HFConfigError(f"{where}: decoder_sparse_step must be a positive integer, got {step!r}")
    mlp_only = cfg.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < layers for i in mlp_only
    ):
        raise HFConfigError(
            f"{where}: mlp_only_layers must be a list of layer indices in [0, {layers}), got {mlp_only!r}"
        )
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    eos = cfg.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return Qwen3MoeSpec(
        architecture=archs[0] if archs else _ARCHITECTURE,
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=int(cfg.get("intermediate_size", 0) or 0),
        moe_intermediate_size=moe_inter,
        num_experts=num_experts,
        top_k=top_k,
        norm_topk_prob=norm,
        norm_topk_prob_given=norm_given,
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        vocab_size=int(cfg.get("vocab_size", 0) or 0),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 0) or 0),
        torch_dtype=str(dtype),
        decoder_sparse_step=step,
        mlp_only_layers=tuple(sorted(set(mlp_only))),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        eos_token_id=eos if isinstance(eos, int) else None,
    )
