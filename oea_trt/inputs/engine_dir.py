"""Check a TensorRT-LLM engine directory written by `oea-trt build`, without loading it."""
from __future__ import annotations

import os

from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json
from oea_trt.inputs.numbers import check_int

#: Keys of the config.json TensorRT-LLM writes next to its engines (an HF config has neither).
ENGINE_CONFIG_KEYS = ("pretrained_config", "build_config")


def check_engine_dir(path: str, what: str = "engine directory") -> dict:
    """The engine's config.json content; InputError for a missing directory, a Hugging Face
    model directory passed by mistake, or a directory without engine files."""
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist; pass the output directory of `oea-trt build`")
    if not os.path.isdir(path):
        raise InputError(f"{what} {path} is a file; pass the output directory of `oea-trt build`")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise InputError(f"{what} {path} is not a TensorRT-LLM engine directory (no config.json); "
                         "pass the output directory of `oea-trt build`")
    config = read_json(config_path, what, dict)
    if not any(isinstance(config.get(key), dict) for key in ENGINE_CONFIG_KEYS):
        if "model_type" in config or "architectures" in config:
            raise InputError(f"{what} {path} is a Hugging Face model directory, not an engine; build one with "
                             f"`oea-trt build {path} -o ENGINE_DIR` and pass ENGINE_DIR")
        raise InputError(f"{config_path} has neither pretrained_config nor build_config: not a TensorRT-LLM "
                         "engine config; pass the output directory of `oea-trt build`")
    check_engine_config(config, config_path)
    if not any(name.endswith(".engine") for name in os.listdir(path)):
        raise InputError(f"{what} {path} has no *.engine file (the build did not finish?); rebuild with "
                         "`oea-trt build`")
    oea_config = os.path.join(path, "oea_config.json")
    if os.path.isfile(oea_config):
        content = read_json(oea_config, what, dict)
        for key in ("routing", "plugin", "model", "build"):
            if content.get(key) is not None and not isinstance(content[key], dict):
                raise InputError(f"{oea_config}: {key} must be an object, got {type(content[key]).__name__}; "
                                 "rebuild with `oea-trt build`")
    return config


def check_engine_config(config: dict, config_path: str) -> None:
    """The fields tools read from TensorRT-LLM's engine config.json, with their JSON types."""
    for key in ENGINE_CONFIG_KEYS:
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise InputError(f"{config_path}: {key} must be an object, got {type(config[key]).__name__}")
    mapping = (config.get("pretrained_config") or {}).get("mapping")
    if mapping is not None:
        if not isinstance(mapping, dict):
            raise InputError(f"{config_path}: pretrained_config.mapping must be an object, got {type(mapping).__name__}")
        for field in ("world_size", "tp_size", "pp_size"):
            if mapping.get(field) is not None:
                check_int(mapping[field], f"{config_path}: pretrained_config.mapping.{field}", lo=1)
    batch = (config.get("build_config") or {}).get("max_batch_size")
    if batch is not None:
        check_int(batch, f"{config_path}: build_config.max_batch_size", lo=1)
