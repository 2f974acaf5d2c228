"""The engine build, resolved and checked before anything heavy runs (what --dry-run prints).

Plain Python: reads only the Hugging Face config.json, so the plan (model facts, expert
shapes and bytes per rank, per-layer k0, the exact steps and commands) is testable in CI and
printable on machines without TensorRT-LLM. oea_trt.integrations.trtllm.build executes the same plan.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from oea_trt.routing.config import ConfigError, OEAConfig, format_k0_schedule
from oea_trt.plan.hf_config import DTYPE_BYTES, HFConfigError, Qwen3MoeSpec, qwen3_moe_spec
from oea_trt.plan.routing_plan import RoutingPlan, format_layer_ranges

#: Class name trtllm-build loads from MODEL_CLS_FILE (--model_cls_file / --model_cls_name).
MODEL_CLS_NAME = "OEAQwenForCausalLM"
#: The shim file trtllm-build imports; it re-exports the class from oea_trt.integrations.trtllm.model so
#: worker processes can unpickle it by its package name.
MODEL_CLS_FILE = Path(__file__).with_name("model_cls_file.py")
#: TensorRT-LLM's MoE plugin skips ids outside [0, E) without renormalizing: our fill.
ENGINE_FILL = "invalid"
#: The paper's k0 that kept Qwen3-30B-A3B's accuracy (docs/oea-spec.md).
DEFAULT_K0 = 3


class BuildPlanError(ValueError):
    """A build option that cannot work with this model; the message says what would."""


@dataclasses.dataclass
class BuildOptions:
    hf_dir: str
    output_dir: str
    checkpoint_dir: Optional[str] = None     # default: <output_dir>.ckpt (kept for rebuilds)
    dtype: str = "auto"                      # auto = the HF config's torch_dtype
    tp_size: int = 1
    ep_size: int = 1                          # expert parallel; moe_tp_size = tp_size / ep_size
    max_batch_size: int = 64
    max_num_tokens: int = 8192
    max_input_len: Optional[int] = None
    max_seq_len: Optional[int] = None
    k0: int = DEFAULT_K0
    k0_schedule: Optional[Tuple[Tuple[int, int], ...]] = None
    layer_k0: Optional[Dict[int, int]] = None
    k_max: Optional[int] = None
    max_rank: Optional[int] = None
    top_p: float = 1.0
    piggyback_on_context: bool = True
    batch_split: str = "host_request_types"
    workers: int = 1
    extra_build_args: Sequence[str] = ()
    trtllm_build: str = "trtllm-build"
    plugin_library: Optional[str] = None     # liboea_routing_trt.so (default: oea_trt.plugin.find_library)
    # A whole routing plan (an oea_config.json's): when given, the routing fields above
    # (k0 .. batch_split) are not read and the plan is built as it is, if it fits the model.
    routing: Optional[RoutingPlan] = None


@dataclasses.dataclass(frozen=True)
class ExpertLayout:
    """One MoE layer's experts as one rank holds them."""

    dtype: str
    hidden_size: int
    moe_intermediate_size: int
    num_experts: int
    moe_tp_size: int
    moe_ep_size: int

    @property
    def experts_per_rank(self) -> int:
        return self.num_experts // self.moe_ep_size

    @property
    def intermediate_per_rank(self) -> int:
        return self.moe_intermediate_size // self.moe_tp_size

    @property
    def expert_bytes(self) -> int:
        """One whole expert (gate, up, down), all ranks' slices together."""
        return 3 * self.hidden_size * self.moe_intermediate_size * DTYPE_BYTES[self.dtype]

    @property
    def expert_slice_bytes(self) -> int:
        """The part of one expert a rank reads when that expert is active."""
        return 3 * self.hidden_size * self.intermediate_per_rank * DTYPE_BYTES[self.dtype]

    @property
    def layer_bytes_per_rank(self) -> int:
        return self.experts_per_rank * self.expert_slice_bytes

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Per-rank tensor shapes as TensorRT-LLM stores them (MOEWeightWrapper): fc fuses
        up and gate, proj is down; both [experts_per_rank, out, in]."""
        I, H, n = self.intermediate_per_rank, self.hidden_size, self.experts_per_rank
        return {"mlp.fc.weight (up|gate)": (n, 2 * I, H), "mlp.proj.weight (down)": (n, H, I),
                "mlp.router.weight (fp32)": (self.num_experts, H)}


@dataclasses.dataclass
class BuildStep:
    name: str
    what: str
    command: Optional[List[str]] = None      # a shell command, when the step is one

    def shell(self) -> str:
        return " ".join(shlex.quote(c) for c in self.command) if self.command else ""


@dataclasses.dataclass
class BuildPlan:
    options: BuildOptions
    spec: Qwen3MoeSpec
    dtype: str
    moe_tp_size: int
    moe_ep_size: int
    checkpoint_dir: str
    max_input_len: int
    max_seq_len: int
    routing: RoutingPlan
    experts: ExpertLayout
    steps: List[BuildStep]

    @property
    def world_size(self) -> int:
        return self.options.tp_size

    def format(self) -> str:
        """The human-readable plan (what `oea-trt build --dry-run` prints)."""
        s, o, e, r = self.spec, self.options, self.experts, self.routing
        base = r.base
        moe_layers = s.moe_layers
        k0s = r.k0_by_layer()
        distinct = sorted(set(k0s.values()))
        if len(distinct) == 1:
            k0_line = f"k0={distinct[0]} in all {len(moe_layers)} MoE layers"
        else:
            k0_line = "; ".join(
                f"k0={k} in layers {format_layer_ranges([l for l in moe_layers if k0s[l] == k])}" for k in distinct
            )
        renorm_src = "norm_topk_prob=" + str(s.norm_topk_prob).lower() + (
            "" if s.norm_topk_prob_given else " (absent; transformers' default)")
        lines = [
            "OEA engine build plan",
            f"  model          {o.hf_dir}",
            f"  architecture   {s.architecture}: {s.num_hidden_layers} layers, {len(moe_layers)} MoE layers "
            f"({format_layer_ranges(moe_layers)}), hidden {s.hidden_size}, heads {s.num_attention_heads}/"
            f"{s.num_key_value_heads} kv, head_dim {s.head_dim}, vocab {s.vocab_size}",
            f"  experts        {s.num_experts} experts, top-{s.top_k}, moe_intermediate {s.moe_intermediate_size}; "
            f"{renorm_src} -> renormalize={str(base.renormalize).lower()}",
            f"  expert weights SwiGLU gate/up [{s.moe_intermediate_size},{s.hidden_size}] + down "
            f"[{s.hidden_size},{s.moe_intermediate_size}] in {self.dtype} = {e.expert_bytes / 1e6:.2f} MB per expert",
            f"  parallelism    tp={o.tp_size} (MoE: tp={self.moe_tp_size} x ep={self.moe_ep_size}); per rank "
            f"{e.experts_per_rank} experts x {e.expert_slice_bytes / 1e6:.2f} MB = {e.layer_bytes_per_rank / 1e9:.3f} GB "
            f"per MoE layer, {e.layer_bytes_per_rank * len(moe_layers) / 1e9:.2f} GB for all MoE layers",
            "  rank tensors   " + ", ".join(f"{k} {list(v)}" for k, v in e.shapes().items()),
            f"  routing        OEA {k0_line}; k_max={base.k_max}, max_rank={base.max_rank}, top_p={base.top_p:g}, "
            f"piggyback_on_context={str(base.piggyback_on_context).lower()}, fill={base.fill}"
            + (f", k0_schedule={format_k0_schedule(base.k0_schedule)}" if base.k0_schedule else ""),
            f"  token kinds    {_split_words(r.batch_split)}",
            f"  engine limits  max_batch_size={o.max_batch_size}, max_num_tokens={o.max_num_tokens}, "
            f"max_input_len={self.max_input_len}, max_seq_len={self.max_seq_len}, workers={o.workers}",
            f"  outputs        checkpoint {self.checkpoint_dir}; engine {o.output_dir} (+ oea_config.json)",
            f"  plugin         {o.plugin_library or '$OEA_TRT_PLUGIN_LIB or the build directories (oea_trt.plugin)'}",
            "steps:",
        ]
        for i, step in enumerate(self.steps, 1):
            lines.append(f"  {i}. {step.name}: {step.what}")
            if step.command:
                lines.append(f"     $ {step.shell()}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        o = self.options
        return {
            "hf_dir": o.hf_dir,
            "dtype": self.dtype,
            "tp_size": o.tp_size,
            "moe_tp_size": self.moe_tp_size,
            "moe_ep_size": self.moe_ep_size,
            "max_batch_size": o.max_batch_size,
            "max_num_tokens": o.max_num_tokens,
            "max_input_len": self.max_input_len,
            "max_seq_len": self.max_seq_len,
            "checkpoint_dir": self.checkpoint_dir,
            "num_moe_layers": len(self.spec.moe_layers),
            "num_experts": self.spec.num_experts,
            "top_k": self.spec.top_k,
            "hidden_size": self.spec.hidden_size,
            "moe_intermediate_size": self.spec.moe_intermediate_size,
            "expert_bytes": self.experts.expert_bytes,
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }


def _split_words(split: str) -> str:
    if split == "host_request_types":
        return ("decode rows get OEA, context rows plain top-k (joining the loaded set); split read "
                "from TensorRT-LLM's host_request_types/host_context_lengths inputs")
    return "every row treated as a decode token (no batch description wired)"


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BuildPlanError(f"{name} must be a positive integer, got {value!r}")
    return value


def make_plan(options: BuildOptions) -> BuildPlan:
    """Resolve and check every option against the model; BuildPlanError/HFConfigError/ConfigError
    carry one-line messages for the CLI."""
    spec = qwen3_moe_spec(options.hf_dir)
    for name in ("tp_size", "ep_size", "max_batch_size", "max_num_tokens", "workers"):
        _positive(name.replace("_", "-"), getattr(options, name))
    dtype = spec.torch_dtype if options.dtype == "auto" else options.dtype
    if dtype not in DTYPE_BYTES:
        raise BuildPlanError(
            f"dtype must be one of auto, {', '.join(DTYPE_BYTES)}; the model's torch_dtype is {spec.torch_dtype!r}"
            if options.dtype == "auto" else f"dtype must be one of auto, {', '.join(DTYPE_BYTES)}, got {dtype!r}"
        )
    if spec.dense_layers:
        # QWenConfig.from_hugging_face keeps mlp_only_layers / decoder_sparse_step, but
        # QWenDecoderLayer chooses the MLP from config.moe alone: every layer gets a MoE.
        raise BuildPlanError(
            f"layers {format_layer_ranges(spec.dense_layers)} are dense (mlp_only_layers/decoder_sparse_step), "
            "but TensorRT-LLM 1.2.1's QWenDecoderLayer builds a MoE in every layer; only all-MoE Qwen3 "
            "checkpoints are supported"
        )
    tp, ep = options.tp_size, options.ep_size
    if tp % ep:
        raise BuildPlanError(f"ep-size must divide tp-size (MoE splits tp = moe_tp x ep), got tp={tp}, ep={ep}")
    moe_tp = tp // ep
    if spec.num_experts % ep:
        raise BuildPlanError(f"ep-size must divide num_experts={spec.num_experts}, got {ep}")
    if spec.moe_intermediate_size % moe_tp:
        raise BuildPlanError(
            f"MoE tensor parallelism tp/ep={moe_tp} must divide moe_intermediate_size="
            f"{spec.moe_intermediate_size}"
        )
    if spec.num_attention_heads % tp:
        raise BuildPlanError(f"tp-size must divide num_attention_heads={spec.num_attention_heads}, got {tp}")
    max_seq = options.max_seq_len or spec.max_position_embeddings or 4096
    max_input = options.max_input_len or min(max_seq, options.max_num_tokens)
    if max_input > max_seq:
        raise BuildPlanError(f"max-input-len={max_input} must not exceed max-seq-len={max_seq}")
    if options.batch_split not in ("host_request_types", "all_decode"):
        raise BuildPlanError(f"batch split must be host_request_types or all_decode, got {options.batch_split!r}")

    routing = _routing(options, spec)
    checkpoint_dir = options.checkpoint_dir or (os.path.normpath(options.output_dir) + ".ckpt")
    experts = ExpertLayout(dtype=dtype, hidden_size=spec.hidden_size,
                           moe_intermediate_size=spec.moe_intermediate_size, num_experts=spec.num_experts,
                           moe_tp_size=moe_tp, moe_ep_size=ep)
    plan = BuildPlan(options=options, spec=spec, dtype=dtype, moe_tp_size=moe_tp, moe_ep_size=ep,
                     checkpoint_dir=checkpoint_dir, max_input_len=max_input, max_seq_len=max_seq,
                     routing=routing, experts=experts, steps=[])
    plan.steps = _steps(plan)
    return plan


def routing_misfits(routing: RoutingPlan, spec: Qwen3MoeSpec) -> List[str]:
    """Why a routing plan given whole (an oea_config.json's) cannot build an engine of this model:
    it was made for another model, or its knobs are ones a TensorRT-LLM engine cannot run."""
    found = routing.model_differences(spec)
    if routing.base.fill != ENGINE_FILL:
        found.append(f"fill is {routing.base.fill!r}, engines need {ENGINE_FILL!r} (the MoE plugin skips ids "
                     "outside [0, E))")
    if routing.base.k_max != spec.top_k:
        found.append(_k_max_words(spec, routing.base.k_max))
    return found


def _k_max_words(spec: Qwen3MoeSpec, k_max: int) -> str:
    # TensorRT-LLM's MoE plugin takes its experts-per-token from the layer's top_k; more slots
    # than top_k would need a second MixtureOfExperts config (not built here).
    return f"k-max must equal the model's top_k={spec.top_k} for TensorRT-LLM engines, got {k_max}"


def _routing(options: BuildOptions, spec: Qwen3MoeSpec) -> RoutingPlan:
    """The routing plan given whole (checked against the model), or the one the routing options
    make for the model."""
    if options.routing is not None:
        misfits = routing_misfits(options.routing, spec)
        if misfits:
            raise BuildPlanError(f"the routing plan does not fit {options.hf_dir}: " + "; ".join(misfits))
        return options.routing
    base = OEAConfig(num_experts=spec.num_experts, top_k=spec.top_k, k0=options.k0, k_max=options.k_max,
                     max_rank=options.max_rank, top_p=options.top_p, renormalize=spec.norm_topk_prob,
                     fill=ENGINE_FILL, piggyback_on_context=options.piggyback_on_context,
                     k0_schedule=options.k0_schedule)
    if base.k_max != spec.top_k:
        raise BuildPlanError(_k_max_words(spec, base.k_max))
    return RoutingPlan(base=base, moe_layers=tuple(spec.moe_layers), layer_k0=dict(options.layer_k0 or {}),
                       batch_split=options.batch_split)


def trtllm_build_command(plan: BuildPlan) -> List[str]:
    o = plan.options
    cmd = [
        o.trtllm_build,
        "--checkpoint_dir", plan.checkpoint_dir,
        "--output_dir", o.output_dir,
        "--model_cls_file", str(MODEL_CLS_FILE),
        "--model_cls_name", MODEL_CLS_NAME,
        "--max_batch_size", str(o.max_batch_size),
        "--max_num_tokens", str(o.max_num_tokens),
        "--max_input_len", str(plan.max_input_len),
        "--max_seq_len", str(plan.max_seq_len),
        "--workers", str(o.workers),
        # The decode/context split reads host_request_types and host_context_lengths, which
        # exist only with the GPT attention plugin and packed (padding-free) inputs.
        "--gpt_attention_plugin", "auto",
        "--remove_input_padding", "enable",
        "--moe_plugin", "auto",
        "--gemm_plugin", "auto",
    ]
    return cmd + list(o.extra_build_args)


def _steps(plan: BuildPlan) -> List[BuildStep]:
    o, s = plan.options, plan.spec
    ranks = plan.world_size
    renorm = "RENORMALIZE (1)" if s.norm_topk_prob else "NONE (0)"
    return [
        BuildStep(
            "convert",
            f"HF -> TensorRT-LLM checkpoint, {ranks} rank(s): for rank in 0..{ranks - 1}: "
            f"QWenForCausalLM.from_hugging_face({o.hf_dir!r}, {plan.dtype!r}, mapping=Mapping(world_size={ranks}, "
            f"rank=rank, tp_size={o.tp_size}, pp_size=1, moe_tp_size={plan.moe_tp_size}, "
            f"moe_ep_size={plan.moe_ep_size}), quant_config=QuantConfig()).save_checkpoint("
            f"{plan.checkpoint_dir!r}, save_config=rank == 0)",
        ),
        BuildStep(
            "patch checkpoint config",
            f"{os.path.join(plan.checkpoint_dir, 'config.json')}: moe.normalization_mode = {renorm} (TensorRT-LLM's "
            "Qwen converter writes NONE; HF norm_topk_prob decides) and add the per-layer OEA routing plan "
            "under key \"oea\"",
        ),
        BuildStep(
            "build engine",
            f"trtllm-build with the OEA model class ({MODEL_CLS_NAME}: every MoE layer routes with the OEA "
            "plugin; importing it loads the plugin library)",
            trtllm_build_command(plan),
        ),
        BuildStep(
            "write oea_config.json",
            f"{os.path.join(o.output_dir, 'oea_config.json')}: routing plan, plugin name/version/library, "
            "oea-trt and TensorRT-LLM versions, git commit",
        ),
    ]


__all__ = ["BuildOptions", "BuildPlan", "BuildPlanError", "BuildStep", "ExpertLayout", "HFConfigError",
           "ConfigError", "DEFAULT_K0", "make_plan", "routing_misfits", "trtllm_build_command", "MODEL_CLS_FILE",
           "MODEL_CLS_NAME"]

if __name__ == "__main__":  # pragma: no cover - convenience: python -m oea_trt.integrations.trtllm.build_plan HF_DIR
    print(make_plan(BuildOptions(hf_dir=sys.argv[1], output_dir="engine")).format())
