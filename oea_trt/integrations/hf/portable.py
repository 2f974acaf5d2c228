"""Make a saved Qwen3-MoE config.json readable by transformers 4.51+ as well as 5.x.

transformers 5 writes `num_local_experts` and `rope_parameters`; 4.x reads `num_experts` and
`rope_theta` and would silently fall back to 128 experts / its default theta. Writing both
spellings (same values) keeps one checkpoint loadable by either major version.
"""
from __future__ import annotations

import json
import os


def add_v4_config_keys(model_dir: str) -> dict:
    path = os.path.join(model_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    if "num_local_experts" in config and "num_experts" not in config:
        config["num_experts"] = config["num_local_experts"]
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return config
