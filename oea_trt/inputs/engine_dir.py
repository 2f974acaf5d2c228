"""Check a TensorRT-LLM engine directory written by `oea-trt build`, without loading it."""
from __future__ import annotations

import os

from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json

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
    if not any(name.endswith(".engine") for name in os.listdir(path)):
        raise InputError(f"{what} {path} has no *.engine file (the build did not finish?); rebuild with "
                         "`oea-trt build`")
    oea_config = os.path.join(path, "oea_config.json")
    if os.path.isfile(oea_config):
        read_json(oea_config, what, dict)
    return config
