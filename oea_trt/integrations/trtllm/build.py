"""Build a Qwen3-MoE TensorRT-LLM engine with OEA routing: the one implementation behind
`oea-trt build` and builder/build_qwen3_moe_oea.py.

Steps (oea_trt.integrations.trtllm.build_plan resolves and prints them; --dry-run stops there):
  1. convert the HF checkpoint with TensorRT-LLM's own Qwen converter, one rank at a time;
  2. patch the checkpoint config: MoE renormalization from HF norm_topk_prob, OEA plan under "oea";
  3. trtllm-build with our model class (--model_cls_file), which loads the OEA plugin (the
     --plugin-library path reaches that process as $OEA_TRT_PLUGIN_LIB in its environment);
  4. write oea_config.json next to the engine.
TensorRT-LLM is imported only by step 1 and by the trtllm-build process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Mapping

from oea_trt.integrations.trtllm.build_plan import BuildOptions, BuildPlan, make_plan
from oea_trt.plan.config_file import engine_config_dict, write_engine_config
from oea_trt.plan.routing_plan import CONFIG_KEY, RoutingPlan

#: TensorRT-LLM's MoeConfig.ExpertScaleNormalizationMode values (tensorrt_llm/layers/moe.py).
_NORMALIZATION_NONE, _NORMALIZATION_RENORMALIZE = 0, 1

Progress = Callable[[str], None]


class BuildError(RuntimeError):
    """A build step failed; the message names the step and what to do."""


def _say(progress: Progress, text: str) -> None:
    progress(text)


def require_tensorrt_llm() -> str:
    """tensorrt_llm's version, or BuildError explaining where it is available."""
    try:
        import tensorrt_llm
    except ImportError as exc:
        raise BuildError(
            f"TensorRT-LLM is not importable here ({exc}); run the build inside NVIDIA's "
            "nvcr.io/nvidia/tensorrt-llm/release:1.2.1 container, or use --dry-run to print the plan"
        ) from None
    return tensorrt_llm.__version__


def convert_checkpoint(plan: BuildPlan, progress: Progress = print) -> None:
    """Step 1: HF directory -> TensorRT-LLM checkpoint (rank{r}.safetensors + config.json), with
    TensorRT-LLM's Qwen converter exactly as examples/models/core/qwen/convert_checkpoint.py
    calls it (bf16/fp16/fp32, no quantization)."""
    from tensorrt_llm.mapping import Mapping
    from tensorrt_llm.models import QWenForCausalLM
    from tensorrt_llm.models.modeling_utils import QuantConfig

    o = plan.options
    os.makedirs(plan.checkpoint_dir, exist_ok=True)
    world = plan.world_size

    def convert_rank(rank: int) -> int:
        t0 = time.time()
        mapping = Mapping(world_size=world, rank=rank, tp_size=o.tp_size, pp_size=1,
                          moe_tp_size=plan.moe_tp_size, moe_ep_size=plan.moe_ep_size)
        model = QWenForCausalLM.from_hugging_face(o.hf_dir, plan.dtype, mapping=mapping,
                                                  quant_config=QuantConfig())
        model.save_checkpoint(plan.checkpoint_dir, save_config=(rank == 0))
        del model
        _say(progress, f"  converted rank {rank + 1}/{world} in {time.time() - t0:.0f}s")
        return rank

    workers = max(1, min(o.workers, world))
    if workers == 1:
        for rank in range(world):
            convert_rank(rank)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(convert_rank, r) for r in range(world)]
        errors = []
        for fut in as_completed(futures):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - collect every rank's failure
                errors.append(exc)
        if errors:
            raise BuildError(f"checkpoint conversion failed on {len(errors)} rank(s): {errors[0]}")


def patch_checkpoint_config(checkpoint_dir: str, routing: RoutingPlan, norm_topk_prob: bool) -> dict:
    """Step 2: make the checkpoint config route like Hugging Face and carry the OEA plan.

    TensorRT-LLM's Qwen converter hard-codes normalization NONE for every Qwen model, which is
    wrong for Qwen3 (norm_topk_prob=true). The OEA layer renormalizes from the plan itself; the
    corrected mode also keeps a stock build of this checkpoint right."""
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise BuildError(f"{path} not found: the conversion step did not write a checkpoint config")
    with open(path) as f:
        cfg = json.load(f)
    moe = cfg.get("moe")
    if not isinstance(moe, dict) or "num_experts" not in moe:
        raise BuildError(f"{path} has no 'moe' section: not a TensorRT-LLM MoE checkpoint")
    base = routing.base
    if moe.get("num_experts") != base.num_experts or moe.get("top_k") != base.top_k:
        raise BuildError(
            f"{path}: moe num_experts/top_k {moe.get('num_experts')}/{moe.get('top_k')} disagree with the "
            f"routing plan {base.num_experts}/{base.top_k}"
        )
    moe["normalization_mode"] = _NORMALIZATION_RENORMALIZE if norm_topk_prob else _NORMALIZATION_NONE
    cfg[CONFIG_KEY] = routing.to_dict()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=4)
    os.replace(tmp, path)
    return cfg


def trtllm_build_env(plan: BuildPlan, base_env: Mapping[str, str]) -> dict:
    """The trtllm-build process's environment: this oea_trt first on PYTHONPATH (trtllm-build
    imports our model file by path), and the plugin library the build was given, which
    oea_trt.plugin.find_library reads from $OEA_TRT_PLUGIN_LIB in that process."""
    import oea_trt
    from oea_trt.plugin import LIBRARY_ENV

    env = dict(base_env)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(oea_trt.__file__)))
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if plan.options.plugin_library:
        env[LIBRARY_ENV] = os.path.abspath(plan.options.plugin_library)
    return env


def run_trtllm_build(plan: BuildPlan, progress: Progress = print) -> None:
    """Step 3: trtllm-build with our model class, streaming its log lines as progress."""
    from oea_trt.integrations.trtllm.build_plan import trtllm_build_command

    cmd = trtllm_build_command(plan)
    env = trtllm_build_env(plan, os.environ)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]} not found on PATH: it ships with TensorRT-LLM 1.2.1") from None
    tail = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        _say(progress, "  | " + line)
    if proc.wait() != 0:
        raise BuildError(f"trtllm-build exited with status {proc.returncode}; last lines:\n" + "\n".join(tail))


def build(options: BuildOptions, progress: Progress = print, dry_run: bool = False) -> BuildPlan:
    """Run the whole build (or, with dry_run, only print the plan). Returns the plan."""
    plan = make_plan(options)
    _say(progress, plan.format())
    if dry_run:
        return plan
    version = require_tensorrt_llm()
    if options.plugin_library and not os.path.isfile(options.plugin_library):
        raise BuildError(f"plugin library {options.plugin_library} does not exist")
    started = time.time()
    n = len(plan.steps)

    def step(i: int) -> None:
        _say(progress, f"[{i}/{n}] {plan.steps[i - 1].name} (t+{time.time() - started:.0f}s)")

    step(1)
    convert_checkpoint(plan, progress)
    step(2)
    patch_checkpoint_config(plan.checkpoint_dir, plan.routing, plan.spec.norm_topk_prob)
    step(3)
    run_trtllm_build(plan, progress)
    step(4)
    content = engine_config_dict(
        plan.routing,
        build=plan.to_dict(),
        model={"architecture": plan.spec.architecture, "hf_dir": os.path.abspath(plan.options.hf_dir),
               "norm_topk_prob": plan.spec.norm_topk_prob, "moe_layers": plan.spec.moe_layers},
        trtllm_version=version,
        plugin_library=options.plugin_library,
    )
    path = write_engine_config(plan.options.output_dir, content)
    _say(progress, f"done in {time.time() - started:.0f}s: engine {plan.options.output_dir}, routing recorded in {path}")
    return plan


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `oea-trt build` or builder/build_qwen3_moe_oea.py")
