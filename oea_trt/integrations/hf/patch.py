"""apply_oea(): route a transformers Qwen3-MoE model's MoE layers with OEA, in place, reversibly."""
from __future__ import annotations

import contextlib
import types
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from oea_trt.routing.config import PADDING, ConfigError, OEAConfig
from oea_trt.routing.reference import RoutingResult, oea_route, topk_prune_route
from oea_trt.integrations.hf.batches import MODES, active_experts_by_batch, route_call, selection_mask, token_kinds
from oea_trt.integrations.hf.layers import MoELayer, experts_loop, moe_layers

#: "oea": the paper's rule; "prune": top-k0 without piggybacking (the paper's ablation).
ROUTINGS = ("oea", "prune")

LayerConfig = Union[None, int, OEAConfig]
ConfigSpec = Union[LayerConfig, Sequence[LayerConfig], Mapping[int, LayerConfig]]

_ATTR = "_oea_trt_handle"


def _cuda_route():
    """The CUDA kernel's torch entry point when it is built, else None (use the reference)."""
    try:
        from oea_trt.routing.dispatch import route  # written by the kernel work; optional
    except ImportError:
        return None
    return route


def _route_one(logits: torch.Tensor, config: OEAConfig, kinds: torch.Tensor, routing: str) -> RoutingResult:
    if logits.is_cuda:
        cuda_route = _cuda_route()
        if cuda_route is not None:
            cfg = config.replace(max_rank=1) if routing == "prune" else config
            return cuda_route(logits.contiguous(), cfg, kinds.to(torch.int32).contiguous())
    if routing == "prune":
        return topk_prune_route(logits, config, kinds)
    return oea_route(logits, config, kinds)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """Routing a decode batch is ~50 tiny tensor ops: an OpenMP team only adds latency, and on a
    busy 2-core machine each op then waits for the other core (seen: 0.25 ms -> 8 ms per batch)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _layer_config(spec: LayerConfig, layer: MoELayer) -> OEAConfig:
    E, k, renorm = layer.num_experts, layer.top_k, layer.norm_topk_prob
    if spec is None:
        cfg = OEAConfig.vanilla(E, k, renormalize=renorm)
    elif isinstance(spec, bool) or not isinstance(spec, (int, OEAConfig)):
        raise ConfigError(f"layer {layer.index}: expected an OEAConfig, an integer k0 or None, got {spec!r}")
    elif isinstance(spec, int):
        if not 1 <= spec <= k:
            raise ConfigError(f"layer {layer.index}: k0 must be in [1, top_k={k}], got {spec}")
        cfg = OEAConfig(num_experts=E, top_k=k, k0=spec, renormalize=renorm)
    else:
        cfg = spec
        for field, want in (("num_experts", E), ("top_k", k), ("renormalize", renorm)):
            if getattr(cfg, field) != want:
                what = "norm_topk_prob" if field == "renormalize" else field
                raise ConfigError(
                    f"layer {layer.index} ({layer.name}): OEAConfig.{field}={getattr(cfg, field)!r} "
                    f"but the model's {what} is {want!r}"
                )
    # The experts code of transformers cannot skip an id of -1 (one_hot) and 5.17's eager path
    # cannot skip E either, so unused slots repeat a selected expert with weight 0 ("top1").
    return cfg.replace(fill="top1")


def _layer_configs(spec: ConfigSpec, layers: List[MoELayer]) -> Dict[int, OEAConfig]:
    by_index = {layer.index: layer for layer in layers}
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(by_index))
        if unknown:
            raise ConfigError(f"no MoE layer with index {unknown}; MoE layers are {sorted(by_index)}")
        return {i: _layer_config(spec.get(i), layer) for i, layer in by_index.items()}
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(layers):
            raise ConfigError(f"got {len(spec)} per-layer configs for {len(layers)} MoE layers")
        return {layer.index: _layer_config(s, layer) for s, layer in zip(spec, layers)}
    return {layer.index: _layer_config(spec, layer) for layer in layers}


class _LayerState:
    """Per-layer routing config and statistics (device tensors, no sync per call)."""

    def __init__(self, layer: MoELayer, config: OEAConfig):
        self.layer = layer
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.batches = 0          # routed batches holding at least one real token
        self.active_sum = 0       # sum of distinct experts over those batches
        self.tokens = 0           # real tokens routed
        self.by_batch: Dict[int, List] = {}
        self.router_logits: List[torch.Tensor] = []


class OEAHandle:
    """What apply_oea() returns: remove() undoes the patch; also a context manager.

    Statistics accumulate across forward calls until reset_stats():
    stats() -> {layer_index: {"batches", "mean_active_experts", "tokens", "active_experts_by_batch"}}.
    """

    def __init__(self, model: nn.Module, layers: List[MoELayer], configs: Dict[int, OEAConfig],
                 mode: str, routing: str, decode_batch: Optional[int], count_batches: Sequence[int],
                 record_router_logits: bool):
        self.model = model
        self.mode = mode
        self.routing = routing
        self.decode_batch = decode_batch
        self.count_batches = tuple(count_batches)
        self.record_router_logits = record_router_logits
        self.layers = {layer.index: _LayerState(layer, configs[layer.index]) for layer in layers}
        self._attention_mask: Optional[torch.Tensor] = None
        self._hooks: list = []
        self._patched_forwards: List[nn.Module] = []
        self._removed = False

    # ---- public ------------------------------------------------------------------------
    @property
    def configs(self) -> Dict[int, OEAConfig]:
        return {i: s.config for i, s in self.layers.items()}

    def stats(self) -> Dict[int, dict]:
        out = {}
        for i, s in self.layers.items():
            batches = int(s.batches)
            by_batch = {}
            for b, (total, count) in s.by_batch.items():
                count = int(count)
                by_batch[b] = float(total) / count if count else float("nan")
            out[i] = {
                "batches": batches,
                "mean_active_experts": float(s.active_sum) / batches if batches else float("nan"),
                "tokens": int(s.tokens),
                "active_experts_by_batch": by_batch,
            }
        return out

    def router_logits(self, layer_index: int) -> List[torch.Tensor]:
        """Recorded router logits of one layer, one float32 CPU tensor [B, L, E] per call."""
        return self.layers[layer_index].router_logits

    def reset_stats(self) -> None:
        for s in self.layers.values():
            s.reset()

    def remove(self) -> None:
        if self._removed:
            return
        for hook in self._hooks:
            hook.remove()
        for block in self._patched_forwards:
            del block.forward  # drop the instance attribute: the class's forward is back
        self._hooks.clear()
        self._patched_forwards.clear()
        if getattr(self.model, _ATTR, None) is self:
            delattr(self.model, _ATTR)
        self._removed = True

    def __enter__(self) -> "OEAHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ---- the routing step of one MoE call ------------------------------------------------
    def _route(self, state: _LayerState, router_logits: torch.Tensor, batch: int, length: int):
        cfg = state.config
        kinds = token_kinds(self._attention_mask, batch, length, self.mode, router_logits.device)
        with _one_cpu_thread(router_logits.device):
            ids, weights, active, has_real = route_call(
                router_logits, kinds, self.mode, self.decode_batch, cfg.k_max,
                lambda logits, kind: _route_one(logits, cfg, kind, self.routing))
        with torch.no_grad():
            state.batches += has_real.sum()
            state.active_sum += active[has_real].sum()
            real = kinds != PADDING
            state.tokens += real.sum()
            if self.count_batches:
                sel = selection_mask(ids, weights, kinds, cfg.num_experts)
                for b in self.count_batches:
                    if batch % b == 0:
                        total, count = active_experts_by_batch(sel, real, b)
                        prev = state.by_batch.get(b, (0, 0))
                        state.by_batch[b] = (prev[0] + total, prev[1] + count)
            if self.record_router_logits:
                state.router_logits.append(router_logits.detach().float().cpu().view(batch, length, -1))
        return ids, weights

    # ---- installation ------------------------------------------------------------------
    def _install(self) -> None:
        def capture_mask(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
                mask = args[1]
            self._attention_mask = mask

        def forget_mask(module, args, kwargs, output):
            self._attention_mask = None

        self._hooks.append(self.model.register_forward_pre_hook(capture_mask, with_kwargs=True))
        self._hooks.append(self.model.register_forward_hook(forget_mask, with_kwargs=True, always_call=True))
        for state in self.layers.values():
            if state.layer.style == "router":
                self._install_router_hook(state)
            else:
                self._install_block_forward(state)

    def _install_router_hook(self, state: _LayerState) -> None:
        block, gate = state.layer.block, state.layer.block.gate
        shape = {}

        def remember_shape(module, args):
            hidden = args[0]
            shape["batch"], shape["length"] = (hidden.shape[0], hidden.shape[1]) if hidden.dim() == 3 else (1, hidden.shape[0])

        def reroute(module, args, output):
            router_logits = output[0]
            ids, weights = self._route(state, router_logits, shape["batch"], shape["length"])
            # transformers 5.x hands the experts int64 indices and weights in the logits' dtype.
            return (router_logits, weights.to(router_logits.dtype), ids.long()) + tuple(output[3:])

        self._hooks.append(block.register_forward_pre_hook(remember_shape))
        self._hooks.append(gate.register_forward_hook(reroute))

    def _install_block_forward(self, state: _LayerState) -> None:
        block = state.layer.block
        handle = self

        def forward(self_block, hidden_states):
            B, L, H = hidden_states.shape
            hidden = hidden_states.view(-1, H)
            router_logits = self_block.gate(hidden)
            ids, weights = handle._route(state, router_logits, B, L)
            # transformers 4.x casts the routing weights to the hidden states' dtype.
            out = experts_loop(self_block, hidden, ids.long(), weights.to(hidden.dtype))
            return out.view(B, L, H), router_logits

        block.forward = types.MethodType(forward, block)
        self._patched_forwards.append(block)


def apply_oea(model: nn.Module, config: ConfigSpec = None, *, mode: str = "decode-sim",
              routing: str = "oea", decode_batch: Optional[int] = None,
              count_batches: Sequence[int] = (), record_router_logits: bool = False) -> OEAHandle:
    """Route every Qwen3-MoE layer of `model` with OEA (or top-k0 pruning), in place.

    config: an OEAConfig for every MoE layer, an int k0 (the model's E, k and norm_topk_prob
        fill the rest), None (vanilla routing, still counted), a list with one entry per MoE
        layer, or a {layer_index: entry} dict (missing layers stay vanilla).
    mode: "decode-sim" or "generate" (see oea_trt.integrations.hf.batches).
    routing: "oea" or "prune" (top-k0 without piggybacking).
    decode_batch: in decode-sim mode, cut the forward batch into decode batches of this many
        sequences (default: the whole forward batch is one decode batch).
    count_batches: also count distinct experts per decode batch for these batch sizes (for
        comparing routings whose result does not depend on the batch, e.g. vanilla, pruning).
    record_router_logits: keep every call's router logits (float32, CPU) for traces.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    if decode_batch is not None and (isinstance(decode_batch, bool) or not isinstance(decode_batch, int) or decode_batch < 1):
        raise ValueError(f"decode_batch must be a positive integer or None, got {decode_batch!r}")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in count_batches):
        raise ValueError(f"count_batches must hold positive integers, got {list(count_batches)!r}")
    existing = getattr(model, _ATTR, None)
    if existing is not None:
        raise RuntimeError("OEA is already applied to this model: call .remove() on the existing handle first")
    layers = moe_layers(model)
    handle = OEAHandle(model, layers, _layer_configs(config, layers), mode, routing, decode_batch,
                       count_batches, record_router_logits)
    handle._install()
    setattr(model, _ATTR, handle)
    return handle


@contextlib.contextmanager
def oea_routing(model: nn.Module, config: ConfigSpec = None, **kwargs):
    """`with oea_routing(model, 3): model(...)` routes with OEA inside the block only."""
    handle = apply_oea(model, config, **kwargs)
    try:
        yield handle
    finally:
        handle.remove()
