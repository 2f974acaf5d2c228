"""OEA routing configuration: every knob of the spec, validated once.

The same field table is used by the Python reference, the CUDA launcher binding, the
TensorRT plugin's field collection and the TensorRT-LLM builder, so a knob has one name,
one default and one allowed range everywhere (docs/oea-spec.md is the contract).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence, Tuple


class ConfigError(ValueError):
    """A routing knob outside its allowed range. The message names field, range and value."""


#: What unused output slots hold. Order matters: the index is the integer code passed to the
#: CUDA kernel and stored in the TensorRT plugin's serialized fields.
FILL_MODES: Tuple[str, ...] = ("invalid", "num_experts", "top1")

#: Token kinds of the optional token_kind input (int32 [T]). Any other value is padding.
DECODE, CONTEXT, PADDING = 0, 1, 2


def _fail(field: str, allowed: str, value) -> None:
    raise ConfigError(f"{field} must be {allowed}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class OEAConfig:
    """Knobs of Opportunistic Expert Activation (paper Algorithm 2, see docs/oea-spec.md).

    num_experts: E, experts in the layer.
    top_k: k, the model's experts per token (8 for Qwen3-MoE).
    k0: baseline experts every decode token keeps, in [1, k_max]. k0 >= top_k with
        k_max == top_k is exactly vanilla top-k routing.
    k_max: most experts a token may hold after piggybacking, in [top_k, num_experts]
        (default top_k). It is never below top_k because context tokens route vanilla top-k
        into the same [T, k_max] output.
    max_rank: deepest rank (1-based) a decode token may piggyback on, in [1, num_experts]
        (default num_experts).
    top_p: a token's baseline also stops at the smallest t whose top-t probability mass
        reaches top_p, in (0, 1] (1.0 = off).
    renormalize: weights are r_e / sum of r over the token's selection (Qwen3's
        norm_topk_prob); otherwise the raw softmax scores.
    fill: what unused slots hold: "invalid" (-1), "num_experts" (E) or "top1".
    piggyback_on_context: context tokens' top-k joins the loaded set S_base.
    k0_schedule: ((min_decode_tokens, k0), ...): the entry with the largest
        min_decode_tokens <= decode tokens in the call gives k0; when no entry applies,
        `k0` does. Lets small batches stay vanilla (e.g. k0=8, schedule ((8, 4), (16, 3))).
    """

    num_experts: int
    top_k: int
    k0: int
    k_max: Optional[int] = None
    max_rank: Optional[int] = None
    top_p: float = 1.0
    renormalize: bool = True
    fill: str = "invalid"
    piggyback_on_context: bool = True
    k0_schedule: Optional[Tuple[Tuple[int, int], ...]] = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if not _is_int(self.num_experts) or not 1 <= self.num_experts <= 4096:
            _fail("num_experts", "an integer in [1, 4096]", self.num_experts)
        E = self.num_experts
        if not _is_int(self.top_k) or not 1 <= self.top_k <= E:
            _fail("top_k", f"an integer in [1, num_experts={E}]", self.top_k)
        k_max = self.top_k if self.k_max is None else self.k_max
        if not _is_int(k_max) or not self.top_k <= k_max <= E:
            _fail("k_max", f"an integer in [top_k={self.top_k}, num_experts={E}]", self.k_max)
        set_("k_max", k_max)
        if not _is_int(self.k0) or not 1 <= self.k0 <= k_max:
            _fail("k0", f"an integer in [1, k_max={k_max}]", self.k0)
        max_rank = E if self.max_rank is None else self.max_rank
        if not _is_int(max_rank) or not 1 <= max_rank <= E:
            _fail("max_rank", f"an integer in [1, num_experts={E}]", self.max_rank)
        set_("max_rank", max_rank)
        top_p = self.top_p
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not (
            math.isfinite(top_p) and 0.0 < top_p <= 1.0
        ):
            _fail("top_p", "a number in (0, 1]", self.top_p)
        set_("top_p", float(top_p))
        if not isinstance(self.renormalize, bool):
            _fail("renormalize", "true or false", self.renormalize)
        if self.fill not in FILL_MODES:
            _fail("fill", "one of " + ", ".join(FILL_MODES), self.fill)
        if not isinstance(self.piggyback_on_context, bool):
            _fail("piggyback_on_context", "true or false", self.piggyback_on_context)
        set_("k0_schedule", _validated_schedule(self.k0_schedule, k_max))

    # ---- derived views -------------------------------------------------------------------
    @property
    def fill_code(self) -> int:
        """Integer code of `fill` for the CUDA kernel and the TensorRT plugin."""
        return FILL_MODES.index(self.fill)

    def k0_for(self, num_decode_tokens: int) -> int:
        """k0 for a call holding `num_decode_tokens` decode tokens (host-side helper)."""
        k0 = self.k0
        for min_tokens, scheduled in self.k0_schedule or ():
            if num_decode_tokens >= min_tokens:
                k0 = scheduled
        return k0

    def is_vanilla(self) -> bool:
        """True when this config routes every token exactly like plain top-k."""
        return (
            self.k_max == self.top_k
            and self.top_p >= 1.0
            and self.k0 >= self.top_k
            and all(k0 >= self.top_k for _, k0 in self.k0_schedule or ())
        )

    def replace(self, **changes) -> "OEAConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["k0_schedule"] = [list(p) for p in self.k0_schedule] if self.k0_schedule else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OEAConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown OEA config field(s) {unknown}; known: {sorted(fields)}")
        return cls(**d)

    @classmethod
    def vanilla(cls, num_experts: int, top_k: int, renormalize: bool = True, **kw) -> "OEAConfig":
        """The config that reproduces plain top-k routing (k0 = k_max = top_k)."""
        return cls(num_experts=num_experts, top_k=top_k, k0=top_k, renormalize=renormalize, **kw)


def _validated_schedule(
    schedule: Optional[Iterable[Sequence[int]]], k_max: int
) -> Optional[Tuple[Tuple[int, int], ...]]:
    if schedule is None:
        return None
    try:
        pairs = [tuple(p) for p in schedule]
    except TypeError:
        _fail("k0_schedule", "a list of (min_decode_tokens, k0) pairs", schedule)
    if not pairs:
        _fail("k0_schedule", "a non-empty list of (min_decode_tokens, k0) pairs or None", schedule)
    if len(pairs) > 16:
        _fail("k0_schedule", "at most 16 (min_decode_tokens, k0) pairs", schedule)
    for p in pairs:
        if len(p) != 2 or not all(_is_int(v) for v in p):
            _fail("k0_schedule entry", "a pair of integers (min_decode_tokens, k0)", p)
        if p[0] < 0:
            _fail("k0_schedule min_decode_tokens", "an integer >= 0", p[0])
        if not 1 <= p[1] <= k_max:
            _fail("k0_schedule k0", f"an integer in [1, k_max={k_max}]", p[1])
    pairs.sort()
    mins = [p[0] for p in pairs]
    if len(set(mins)) != len(mins):
        _fail("k0_schedule", "pairs with distinct min_decode_tokens", schedule)
    return tuple(pairs)


def parse_k0_schedule(text: str) -> Tuple[Tuple[int, int], ...]:
    """Parse the CLI / environment form "8:4,16:3" into ((8, 4), (16, 3))."""
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        left, sep, right = item.partition(":")
        if not sep:
            raise ConfigError(
                f"k0_schedule entries must look like MIN_DECODE_TOKENS:K0 (e.g. 8:4,16:3), got {item!r}"
            )
        try:
            pairs.append((int(left), int(right)))
        except ValueError:
            raise ConfigError(
                f"k0_schedule entries must be integers MIN_DECODE_TOKENS:K0, got {item!r}"
            ) from None
    if not pairs:
        raise ConfigError(f"k0_schedule must name at least one MIN:K0 pair, got {text!r}")
    return tuple(pairs)


def format_k0_schedule(schedule: Optional[Sequence[Sequence[int]]]) -> str:
    """Inverse of parse_k0_schedule ("" for no schedule)."""
    return ",".join(f"{m}:{k}" for m, k in schedule or ())
