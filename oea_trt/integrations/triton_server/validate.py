"""Check a written repository the way Triton would read it, without a server.

Every config.pbtxt is parsed into Triton's ModelConfig protobuf (tritonclient's
model_config_pb2, google.protobuf.text_format: unknown fields, bad enums and syntax errors
fail), then the ensemble is checked against the models it chains: every step's model
exists, every mapped name is an input/output of that model, every internal tensor is
produced before it is consumed and with the same data type, and every required input of a
step is fed. A tensorrtllm-backend model may only declare inputs the backend reads.
"""
from __future__ import annotations

import os
from typing import Dict, List

from oea_trt.integrations.triton_server.models import TENSORRTLLM_BACKEND_INPUTS


class RepoValidationError(ValueError):
    pass


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ImportError(
            f"validating needs tritonclient ({exc}); pip install 'tritonclient[grpc]'"
        ) from None
    return model_config_pb2


def parse_config(path: str):
    """ModelConfig message of one config.pbtxt (RepoValidationError naming the file on error)."""
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    with open(path) as f:
        text = f.read()
    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RepoValidationError(f"{path}: {exc}") from None


def validate_repository(repo_dir: str) -> Dict[str, object]:
    """Parse every model of `repo_dir` and cross-check the ensemble; returns {name: ModelConfig}."""
    configs = {}
    for name in sorted(os.listdir(repo_dir)):
        path = os.path.join(repo_dir, name, "config.pbtxt")
        if not os.path.isfile(path):
            continue
        cfg = parse_config(path)
        if cfg.name != name:
            raise RepoValidationError(f"{path}: name {cfg.name!r} must equal its directory name {name!r}")
        if not any(d.isdigit() for d in os.listdir(os.path.join(repo_dir, name))):
            raise RepoValidationError(f"{repo_dir}/{name} has no version directory (e.g. 1/)")
        if cfg.backend == "python" and not os.path.isfile(os.path.join(repo_dir, name, "1", "model.py")):
            raise RepoValidationError(f"{repo_dir}/{name}/1/model.py missing for a python-backend model")
        if cfg.backend == "tensorrtllm":
            unread = sorted(t.name for t in cfg.input if t.name not in TENSORRTLLM_BACKEND_INPUTS)
            if unread:
                raise RepoValidationError(f"{path}: input(s) {', '.join(unread)} are read by no code of the "
                                          "tensorrtllm backend; see TENSORRTLLM_BACKEND_INPUTS for its names")
        configs[name] = cfg
    for name, cfg in configs.items():
        if cfg.platform == "ensemble":
            _check_ensemble(cfg, configs)
    return configs


def _check_ensemble(ens, configs) -> None:
    pb2 = _model_config_pb2()
    type_name = pb2.DataType.Name
    available = {t.name: t.data_type for t in ens.input}
    errors: List[str] = []
    for step in ens.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            errors.append(f"step model {step.model_name!r} is not in the repository")
            continue
        model_inputs = {t.name: t for t in model.input}
        model_outputs = {t.name: t for t in model.output}
        for key, tensor in step.input_map.items():
            if key not in model_inputs:
                errors.append(f"{step.model_name}: input_map key {key!r} is not an input of the model")
            elif tensor not in available:
                errors.append(f"{step.model_name}: input {key!r} reads {tensor!r}, which no earlier step or "
                              "ensemble input provides")
            elif available[tensor] != model_inputs[key].data_type:
                errors.append(f"{step.model_name}: input {key!r} is {type_name(model_inputs[key].data_type)} but "
                              f"{tensor!r} is {type_name(available[tensor])}")
        for key, tensor in model_inputs.items():
            if not tensor.optional and key not in step.input_map:
                errors.append(f"{step.model_name}: required input {key!r} is not mapped")
        for key, tensor in step.output_map.items():
            if key not in model_outputs:
                errors.append(f"{step.model_name}: output_map key {key!r} is not an output of the model")
            else:
                available[tensor] = model_outputs[key].data_type
    for out in ens.output:
        if out.name not in available:
            errors.append(f"ensemble output {out.name!r} is produced by no step")
        elif available[out.name] != out.data_type:
            errors.append(f"ensemble output {out.name!r} is {type_name(out.data_type)} but its step produces "
                          f"{type_name(available[out.name])}")
    if errors:
        raise RepoValidationError(f"ensemble {ens.name!r}: " + "; ".join(errors))
