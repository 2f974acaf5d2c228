"""Which OEA config each MoE layer routes with: one shared OEAConfig plus per-layer k0.

The plan travels with the model: the builder stores it (to_dict) under the key "oea" of the
TensorRT-LLM checkpoint's config.json, TensorRT-LLM copies that config into the engine's
config.json, and oea_config.json next to the engine records it again for people and tools.
Per-layer k0 replaces the layer's `k0` (the value used when no k0_schedule entry applies);
every other knob, the schedule included, is shared by all layers.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

from oea_trt.routing.config import ConfigError, OEAConfig

#: How the layer learns which rows of the packed batch are decode tokens.
#: "host_request_types": TensorRT-LLM's host_request_types + host_context_lengths network
#:   inputs are wired into the plugin (context requests come first in a packed batch).
#: "all_decode": no batch description; every row is treated as a decode token.
BATCH_SPLITS = ("host_request_types", "all_decode")

#: Key of the routing plan in the TensorRT-LLM checkpoint / engine config.json.
CONFIG_KEY = "oea"


@dataclasses.dataclass(frozen=True)
class RoutingPlan:
    """OEA settings of every MoE layer of one model."""

    base: OEAConfig
    moe_layers: tuple
    layer_k0: Dict[int, int] = dataclasses.field(default_factory=dict)
    batch_split: str = "host_request_types"

    def __post_init__(self) -> None:
        layers = set(self.moe_layers)
        unknown = sorted(set(self.layer_k0) - layers)
        if unknown:
            raise ConfigError(
                f"per-layer k0 names layer(s) {unknown} that are not MoE layers; MoE layers are "
                f"{_ranges(sorted(layers))}"
            )
        if self.batch_split not in BATCH_SPLITS:
            raise ConfigError(f"batch_split must be one of {', '.join(BATCH_SPLITS)}, got {self.batch_split!r}")
        for layer in sorted(self.layer_k0):
            self.config_for_layer(layer)  # raises ConfigError naming k0's range

    def config_for_layer(self, layer: int) -> OEAConfig:
        if layer not in self.moe_layers:
            raise ConfigError(f"layer {layer} is not a MoE layer; MoE layers are {_ranges(list(self.moe_layers))}")
        k0 = self.layer_k0.get(layer)
        if k0 is None:
            return self.base
        try:
            return self.base.replace(k0=k0)
        except ConfigError as exc:
            raise ConfigError(f"layer {layer}: {exc}") from None

    def config_for_built_layer(self, layer: int, built_moe: bool) -> Optional[OEAConfig]:
        """The OEAConfig of a layer whose MLP a framework built (None for a dense MLP the plan
        also calls dense). ConfigError when the two disagree: routing a layer the plan does not
        know, or leaving a planned layer vanilla, would be silent."""
        planned = layer in self.moe_layers
        if built_moe and planned:
            return self.config_for_layer(layer)
        if not built_moe and not planned:
            return None
        built, plan_says = ("a MoE", "dense") if built_moe else ("a dense MLP", "a MoE layer")
        raise ConfigError(
            f"layer {layer}: the model has {built} there but the routing plan has it {plan_says} (MoE layers "
            f"{_ranges(list(self.moe_layers))}); rebuild the plan from this checkpoint's config"
        )

    def k0_by_layer(self) -> Dict[int, int]:
        return {layer: self.config_for_layer(layer).k0 for layer in self.moe_layers}

    def is_vanilla(self) -> bool:
        return all(self.config_for_layer(layer).is_vanilla() for layer in self.moe_layers)

    def with_fill(self, fill: str) -> "RoutingPlan":
        return dataclasses.replace(self, base=self.base.replace(fill=fill))

    def with_k0(self, k0: Optional[int] = None, layer_k0: Optional[Dict[int, int]] = None,
                k0_schedule=None) -> "RoutingPlan":
        """A copy with k0 overridden (a runtime override at load): `k0` replaces the shared k0
        and drops per-layer values unless `layer_k0` is given too."""
        base = self.base
        changes = {}
        if k0 is not None:
            changes["k0"] = k0
        if k0_schedule is not None:
            changes["k0_schedule"] = k0_schedule or None
        if changes:
            base = base.replace(**changes)
        new_layer_k0 = dict(layer_k0) if layer_k0 is not None else ({} if k0 is not None else self.layer_k0)
        return dataclasses.replace(self, base=base, layer_k0=new_layer_k0)

    def to_dict(self) -> dict:
        return {
            "base": self.base.to_dict(),
            "moe_layers": list(self.moe_layers),
            "layer_k0": {str(k): v for k, v in sorted(self.layer_k0.items())},
            "batch_split": self.batch_split,
        }

    def model_differences(self, spec) -> List[str]:
        """How this plan disagrees with a model (a Qwen3MoeSpec): the facts a plan copies from
        its model's config.json. Empty when the plan was made for a model like this one."""
        base, found = self.base, []
        if base.num_experts != spec.num_experts:
            found.append(f"num_experts is {base.num_experts} in the plan, {spec.num_experts} in the model")
        if base.top_k != spec.top_k:
            found.append(f"top_k is {base.top_k} in the plan, {spec.top_k} in the model")
        if base.renormalize != spec.norm_topk_prob:
            found.append(f"renormalize is {str(base.renormalize).lower()} in the plan, the model's norm_topk_prob "
                         f"is {str(spec.norm_topk_prob).lower()}")
        if list(self.moe_layers) != list(spec.moe_layers):
            found.append(f"MoE layers are {_ranges(sorted(self.moe_layers))} in the plan, "
                         f"{_ranges(list(spec.moe_layers))} in the model")
        return found

    @classmethod
    def from_dict(cls, d: dict) -> "RoutingPlan":
        """The plan to_dict wrote. A file a person may have edited is read strictly: json.load
        makes 3.5 a float and true a bool, which int() would silently turn into 3 and 1."""
        if not isinstance(d, dict) or not isinstance(d.get("base"), dict) or "moe_layers" not in d:
            raise ConfigError("malformed OEA routing plan: expected an object with keys base (an object), "
                              "moe_layers and layer_k0")
        missing = [name for name in ("num_experts", "top_k", "k0") if name not in d["base"]]
        if missing:
            raise ConfigError(f"malformed OEA routing plan: base has no {', '.join(missing)}")
        base = OEAConfig.from_dict(dict(d["base"]))
        raw_layers = d["moe_layers"]
        if not isinstance(raw_layers, (list, tuple)) or not all(_is_layer(x) for x in raw_layers):
            raise ConfigError(f"moe_layers must be a list of layer numbers >= 0, got {raw_layers!r}")
        raw_k0 = d.get("layer_k0") or {}
        if not isinstance(raw_k0, dict):
            raise ConfigError(f"layer_k0 must be an object {{\"layer\": k0}}, got {raw_k0!r}")
        layer_k0 = {}
        for key, k0 in raw_k0.items():
            layer = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key
            if not _is_layer(layer):
                raise ConfigError(f"layer_k0 keys must be layer numbers >= 0, got {key!r}")
            if isinstance(k0, bool) or not isinstance(k0, int):
                raise ConfigError(f"layer_k0: k0 of layer {key} must be an integer, got {k0!r}")
            layer_k0[layer] = k0
        return cls(base=base, moe_layers=tuple(raw_layers), layer_k0=layer_k0,
                   batch_split=d.get("batch_split", "host_request_types"))


def _is_layer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_layer_k0(text: str, moe_layers: Sequence[int]) -> Dict[int, int]:
    """Per-layer k0 from the CLI: "0-11:8,12-47:3" (inclusive layer ranges) or a JSON file
    path holding {"layer": k0, ...}. Returns {layer: k0}; later entries win on overlap."""
    text = text.strip()
    if not text:
        raise ConfigError("per-layer k0 is empty; use LAYERS:K0 pairs like 0-3:8,4-47:3 or a JSON file")
    if text.endswith(".json") or os.path.isfile(text):
        try:
            with open(text) as f:
                raw = json.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read per-layer k0 file {text}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"per-layer k0 file {text} is not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"per-layer k0 file {text} must hold an object {{\"layer\": k0}}")
        out = {}
        for k, v in raw.items():
            try:
                out[int(k)] = _as_int(v, f"k0 of layer {k}")
            except ValueError:
                raise ConfigError(f"per-layer k0 file {text}: layer keys must be integers, got {k!r}") from None
        return out
    out: Dict[int, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        left, sep, right = item.partition(":")
        if not sep:
            raise ConfigError(f"per-layer k0 entries must look like LAYERS:K0 (e.g. 0-3:8), got {item!r}")
        k0 = _as_int(right, f"k0 in {item!r}")
        for layer in _parse_layers(left, item):
            out[layer] = k0
    if not out:
        raise ConfigError(f"per-layer k0 {text!r} names no layer")
    missing = sorted(set(out) - set(moe_layers))
    if missing:
        raise ConfigError(
            f"per-layer k0 names layer(s) {_ranges(missing)} that are not MoE layers "
            f"(MoE layers: {_ranges(list(moe_layers))})"
        )
    return out


def _as_int(text, what: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer, got {text!r}") from None
    return value


def _parse_layers(text: str, item: str) -> Iterable[int]:
    text = text.strip()
    lo, dash, hi = text.partition("-")
    first = _as_int(lo, f"layer in {item!r}")
    last = _as_int(hi, f"layer range end in {item!r}") if dash else first
    if first < 0 or last < first:
        raise ConfigError(f"layer range must be FIRST-LAST with 0 <= FIRST <= LAST, got {text!r}")
    return range(first, last + 1)


def _ranges(values: List[int]) -> str:
    """[0,1,2,5,7,8] -> "0-2,5,7-8" (short messages for 94-layer models)."""
    if not values:
        return "none"
    parts = []
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = v
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)


format_layer_ranges = _ranges
