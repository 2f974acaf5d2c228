"""Build steps that need no TensorRT-LLM: patching the converted checkpoint config, and the
oea_config.json written next to the engine."""
import json

import pytest

from oea_trt.routing.config import OEAConfig
from oea_trt.integrations.trtllm.build import BuildError, patch_checkpoint_config
from oea_trt.plan.config_file import (FILE_NAME, engine_config_dict, read_engine_config,
                                            routing_from_engine_config, write_engine_config)
from oea_trt.plan.routing_plan import CONFIG_KEY, RoutingPlan

PLAN = RoutingPlan(base=OEAConfig(num_experts=128, top_k=8, k0=3, fill="invalid"), moe_layers=tuple(range(48)),
                   layer_k0={0: 8})


def _checkpoint(tmp_path, **moe):
    """config.json as TensorRT-LLM's Qwen converter writes it (normalization hard-coded NONE)."""
    cfg = {"architecture": "Qwen3MoeForCausalLM", "dtype": "bfloat16", "num_hidden_layers": 48,
           "qwen_type": "qwen3_moe", "moe": {"num_experts": 128, "top_k": 8, "normalization_mode": 0,
                                            "shared_expert_intermediate_size": 0, **moe}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_patch_sets_renormalize_and_stores_the_plan(tmp_path):
    ckpt = _checkpoint(tmp_path)
    patch_checkpoint_config(str(ckpt), PLAN, norm_topk_prob=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["moe"]["normalization_mode"] == 1  # RENORMALIZE, as HF norm_topk_prob=true
    assert cfg["architecture"] == "Qwen3MoeForCausalLM" and cfg["qwen_type"] == "qwen3_moe"
    assert RoutingPlan.from_dict(cfg[CONFIG_KEY]) == PLAN
    patch_checkpoint_config(str(ckpt), PLAN, norm_topk_prob=False)
    assert json.loads((ckpt / "config.json").read_text())["moe"]["normalization_mode"] == 0


def test_patch_refuses_mismatched_checkpoints(tmp_path):
    with pytest.raises(BuildError, match="disagree with the routing plan 128/8"):
        patch_checkpoint_config(str(_checkpoint(tmp_path, num_experts=64)), PLAN, True)
    with pytest.raises(BuildError, match="not found"):
        patch_checkpoint_config(str(tmp_path / "missing"), PLAN, True)


def test_engine_config_round_trip(tmp_path):
    content = engine_config_dict(PLAN, build={"tp_size": 1}, model={"hf_dir": "/m"}, trtllm_version="1.2.1")
    path = write_engine_config(str(tmp_path), content)
    assert path.endswith(FILE_NAME)
    back = read_engine_config(str(tmp_path))
    assert routing_from_engine_config(back) == PLAN
    assert back["plugin"]["name"] == "OeaRouting" and back["plugin"]["namespace"] == "oea_trt"
    assert back["tensorrt_llm_version"] == "1.2.1" and back["oea_trt_version"]
    with pytest.raises(FileNotFoundError, match="not built by `oea-trt build`"):
        read_engine_config(str(tmp_path / "nothing"))


def test_the_plugin_library_reaches_trtllm_build_through_its_environment_only(tmp_path, monkeypatch):
    from pathlib import Path

    from oea_trt.integrations.trtllm.build import trtllm_build_env
    from oea_trt.integrations.trtllm.build_plan import BuildOptions, make_plan
    from oea_trt.plugin import LIBRARY_ENV

    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    library = tmp_path / "liboea_routing_trt.so"
    library.write_bytes(b"")
    hf = Path(__file__).parent / "data" / "qwen3-30b-a3b"
    plan = make_plan(BuildOptions(hf_dir=str(hf), output_dir=str(tmp_path / "e"), plugin_library=str(library)))
    env = trtllm_build_env(plan, {"PYTHONPATH": "/elsewhere", "HOME": "/h"})
    assert env[LIBRARY_ENV] == str(library) and env["HOME"] == "/h"
    root, rest = env["PYTHONPATH"].split(":", 1)
    assert (Path(root) / "oea_trt" / "__init__.py").is_file() and rest == "/elsewhere"
    import os

    assert LIBRARY_ENV not in os.environ  # this process is left as it was


def test_engine_config_records_the_plugin_library_the_build_used(tmp_path):
    from oea_trt.plugin import PRELOAD_LIBRARY_NAME

    (tmp_path / "liboea_routing_trt.so").write_bytes(b"")
    (tmp_path / PRELOAD_LIBRARY_NAME).write_bytes(b"")
    content = engine_config_dict(PLAN, build={}, model={}, plugin_library=str(tmp_path / "liboea_routing_trt.so"))
    assert content["plugin"]["library"] == str(tmp_path / "liboea_routing_trt.so")
    assert content["plugin"]["preload_library"] == str(tmp_path / PRELOAD_LIBRARY_NAME)
