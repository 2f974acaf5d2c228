"""Tuned KernelConfigs are data the library reads: one JSON file per (GPU, layer shape, dtype).

    oea_trt/moe/tuned_configs/<GPU name, spaces as _>/E<E>_H<H>_I<I>_k<k>_<dtype>.json
    {"1": {KernelConfig fields}, "16": {...}, ...}        (batch size -> config)

`oea-trt bench tune` measures and writes them (oea_trt/bench/tune.py). A batch that was not
tuned takes the nearest tuned batch (distance in log2; a tie goes to the larger batch); a GPU
and shape with no file fall back to default_config's heuristic. Each file is read once per
process.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Dict, Iterable, Optional, Union

import torch

from oea_trt.moe.triton.config import KernelConfig, default_config

#: Where the package's own tuned configs live (package data).
TUNED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned_configs")


class TunedConfigError(ValueError):
    """A tuned-config file that cannot be read as {batch: KernelConfig fields}."""


def device_dir_name(device_name: str) -> str:
    """The folder of one GPU model: its CUDA name with spaces as underscores
    ("NVIDIA H100 80GB HBM3" -> "NVIDIA_H100_80GB_HBM3")."""
    return device_name.strip().replace(" ", "_").replace("/", "_")


def dtype_name(dtype: Union[torch.dtype, str]) -> str:
    return str(dtype).replace("torch.", "")


def file_name(num_experts: int, hidden: int, inter: int, top_k: int, dtype: Union[torch.dtype, str]) -> str:
    return f"E{num_experts}_H{hidden}_I{inter}_k{top_k}_{dtype_name(dtype)}.json"


def config_path(device_name: str, num_experts: int, hidden: int, inter: int, top_k: int,
                dtype: Union[torch.dtype, str], root: Optional[str] = None) -> str:
    return os.path.join(root or TUNED_DIR, device_dir_name(device_name),
                        file_name(num_experts, hidden, inter, top_k, dtype))


def read_tuned(path: str) -> Dict[int, KernelConfig]:
    """{batch: KernelConfig} from one file; TunedConfigError says what is wrong with it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise TunedConfigError(f"tuned config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise TunedConfigError(f"tuned config file {path} must hold a non-empty object "
                               f'{{"<batch>": {{KernelConfig fields}}}}, got {type(data).__name__}')
    configs = {}
    for key, fields in data.items():
        if not key.isdigit() or int(key) < 1:
            raise TunedConfigError(f"tuned config file {path}: key {key!r} is not a batch size (a positive integer)")
        if not isinstance(fields, dict):
            raise TunedConfigError(f"tuned config file {path}, batch {key}: expected an object of KernelConfig "
                                   f"fields, got {type(fields).__name__}")
        try:
            configs[int(key)] = KernelConfig.from_dict(fields)
        except (TypeError, ValueError) as exc:
            raise TunedConfigError(f"tuned config file {path}, batch {key}: {exc}") from None
    return configs


def write_tuned(path: str, configs: Dict[int, KernelConfig]) -> str:
    """Write {batch: KernelConfig} as read_tuned reads it (batches ascending); returns path."""
    if not configs:
        raise ValueError(f"no configs to write to {path}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({str(b): configs[b].to_dict() for b in sorted(configs)}, f, indent=1)
        f.write("\n")
    _read_cached.cache_clear()
    return path


def merge_tuned(path: str, configs: Dict[int, KernelConfig]) -> tuple:
    """Write configs into the file at path, keeping the file's configs of other batches (an
    install of a few re-tuned batches must not drop the rest); (path, batches kept). A file that
    does not read as a tuned-config file is replaced, as write_tuned would."""
    kept: Dict[int, KernelConfig] = {}
    if os.path.isfile(path):
        try:
            kept = {b: c for b, c in read_tuned(path).items() if b not in configs}
        except TunedConfigError:
            pass
    return write_tuned(path, {**kept, **configs}), sorted(kept)


@functools.lru_cache(maxsize=None)
def _read_cached(path: str) -> Optional[Dict[int, KernelConfig]]:
    return read_tuned(path) if os.path.isfile(path) else None


def nearest_batch(batches: Iterable[int], batch: int) -> int:
    """The tuned batch closest to `batch` in log2 distance; a tie goes to the larger one."""
    batch = max(1, batch)
    return min(batches, key=lambda b: (abs(math.log2(b) - math.log2(batch)), -b))


def tuned_configs(device_name: str, num_experts: int, hidden: int, inter: int, top_k: int,
                  dtype: Union[torch.dtype, str], root: Optional[str] = None) -> Optional[Dict[int, KernelConfig]]:
    """{batch: KernelConfig} tuned for this GPU and layer shape, or None where there is no file."""
    return _read_cached(config_path(device_name, num_experts, hidden, inter, top_k, dtype, root))


def tuned_config(num_tokens: int, num_experts: int, hidden: int, inter: int, top_k: int,
                 dtype: Union[torch.dtype, str], device_name: str, root: Optional[str] = None) -> KernelConfig:
    """The config a call of num_tokens tokens runs with: the nearest tuned batch's, else the
    heuristic default."""
    tuned = tuned_configs(device_name, num_experts, hidden, inter, top_k, dtype, root)
    if not tuned:
        return default_config(num_tokens, hidden, inter, top_k, num_experts)
    return tuned[nearest_batch(tuned, num_tokens)]


@functools.lru_cache(maxsize=None)
def cuda_device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def config_for(hidden_states: torch.Tensor, w13: torch.Tensor, top_k: int, root: Optional[str] = None) -> KernelConfig:
    """tuned_config for a CUDA call on these tensors (hidden_states [T, H], w13 [E, 2I, H])."""
    device = hidden_states.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    num_experts, two_inter, hidden = w13.shape
    return tuned_config(hidden_states.shape[0], num_experts, hidden, two_inter // 2, top_k, w13.dtype,
                        cuda_device_name(index), root)
