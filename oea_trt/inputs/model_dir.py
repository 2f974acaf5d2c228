"""Check a Hugging Face Qwen3-MoE model directory before anything loads it.

One check for every front end (build, eval, generate, the runtime): config.json parses, is an
object and describes a Qwen3-MoE model with well-typed fields (oea_trt.plan.qwen3_moe_spec plus
the optional fields it reads leniently); the weights named by the directory exist and are
complete; their routers match the config (a config claiming more layers or experts than the
weights hold would load with randomly initialised routers and give wrong results silently);
optionally a tokenizer is present. Only file headers are read, so it takes milliseconds.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List

from oea_trt.inputs.engine_dir import ENGINE_CONFIG_KEYS
from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json
from oea_trt.inputs.numbers import check_int
from oea_trt.inputs.safetensors_file import safetensors_shapes
from oea_trt.inputs.tokenizer_dir import check_tokenizer_dir
from oea_trt.plan.hf_config import HFConfigError, Qwen3MoeSpec, qwen3_moe_spec

#: Optional config fields that Qwen3MoeSpec reads with int(): checked strictly here.
OPTIONAL_INT_FIELDS = ("num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                       "intermediate_size")
_ROUTER = re.compile(r"^model\.layers\.(\d+)\.mlp\.gate\.weight$")


def check_model_dir(path: str, what: str = "model directory", *, weights: bool = True,
                    tokenizer: bool = False) -> Qwen3MoeSpec:
    """The Qwen3MoeSpec of `path`, or InputError naming the file and what would be right.

    weights: also check the weight files (off for plans that read only config.json, like
    `oea-trt build --dry-run`); tokenizer: also require tokenizer files."""
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist; expected a local Hugging Face Qwen3-MoE directory "
                         "(config.json, *.safetensors, tokenizer files)")
    if not os.path.isdir(path):
        raise InputError(f"{what} {path} is a file; expected a directory holding config.json")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        hint = " (it looks like an engine directory: pass the model it was built from)" \
            if any(n.endswith(".engine") for n in os.listdir(path)) else ""
        raise InputError(f"{what} {path} has no config.json: not a Hugging Face model directory{hint}")
    config = read_json(config_path, what, dict)
    if any(isinstance(config.get(key), dict) for key in ENGINE_CONFIG_KEYS):
        raise InputError(f"{what} {path} is a TensorRT-LLM engine directory; pass the Hugging Face directory it was "
                         f"built from{built_from(path)}")
    for field in OPTIONAL_INT_FIELDS:
        if config.get(field) is not None:
            check_int(config[field], f"{config_path}: {field}", lo=1)
    try:
        spec = qwen3_moe_spec(path)
    except HFConfigError as exc:
        raise InputError(str(exc)) from None
    if weights:
        check_weights(path, spec, what)
    if tokenizer:
        check_tokenizer_dir(path, what)
    return spec


def built_from(engine_dir: str) -> str:
    """" (HF_DIR)" as recorded in an engine's oea_config.json, or "" when it does not say."""
    try:
        hf_dir = (read_json(os.path.join(engine_dir, "oea_config.json"), "engine").get("model") or {}).get("hf_dir")
    except InputError:
        return ""
    return f" ({hf_dir})" if isinstance(hf_dir, str) and hf_dir else ""


def weight_files(path: str, what: str = "model directory") -> List[str]:
    """The weight files from_pretrained() would load from `path` (index first, as it does)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = read_json(index, what, dict).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError(f"{index} has no weight_map {{tensor: file}}; save the model again")
        files = sorted({str(f) for f in weight_map.values()})
        missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise InputError(f"{what} {path} lacks {len(missing)} weight file(s) its index names, e.g. {missing[0]}; "
                             "the download is incomplete")
        return [os.path.join(path, f) for f in files]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)]
    if os.path.isfile(os.path.join(path, "pytorch_model.bin.index.json")):
        return [os.path.join(path, "pytorch_model.bin.index.json")]
    raise InputError(f"{what} {path} has config.json but no weights (model.safetensors or "
                     "model.safetensors.index.json with its shards)")


def check_weights(path: str, spec: Qwen3MoeSpec, what: str = "model directory") -> None:
    shapes: Dict[str, List[int]] = {}
    for file in weight_files(path, what):
        if file.endswith(".safetensors"):
            shapes.update(safetensors_shapes(file))
        elif os.path.getsize(file) == 0:
            raise InputError(f"{file} is empty; save or download the model again")
    routers = {int(m.group(1)): shape for name, shape in shapes.items() if (m := _ROUTER.match(name))}
    if not routers:
        return  # .bin weights or another naming scheme: nothing more to compare cheaply
    expected = [spec.num_experts, spec.hidden_size]
    missing = [i for i in spec.moe_layers if i not in routers]
    if missing:
        raise InputError(f"{what} {path}: config.json has MoE layers up to {spec.moe_layers[-1]}, but the weights "
                         f"have no router for layer {missing[0]}; config.json and the weights do not match")
    extra = sorted(i for i in routers if i >= spec.num_hidden_layers)
    if extra:
        raise InputError(f"{what} {path}: the weights have a layer {extra[-1]}, but config.json says "
                         f"num_hidden_layers={spec.num_hidden_layers}; config.json and the weights do not match")
    for layer, shape in sorted(routers.items()):
        if layer in spec.moe_layers and list(shape) != expected:
            raise InputError(f"{what} {path}: layer {layer}'s router weight is {shape}, but config.json says "
                             f"[num_experts, hidden_size] = {expected}; config.json and the weights do not match")
