"""OEAConfig -> the kernel's parameter record: the one place a routing config crosses into C.

KernelParams has exactly the fields of OeaRoutingParams in plugin/oea_routing.h (a test reads
the header and compares). kernel_params(config) makes it once per validated OEAConfig (cached);
everything that hands a config to the kernel reads it off that record:
    KernelParams.struct      the ctypes struct oea_route_launch takes (library.py, launch.py)
    KernelParams.op_args()   the scalar arguments of torch.ops.oea_trt.route (op.py), and
    params_from_op_args()    their inverse inside the op, cached, with no OEAConfig rebuilt
    oea_trt.plugin.plugin_fields   the TensorRT plugin's fields
KernelParams itself validates nothing: OEAConfig did, and oea_validate_params (C) is the
check of a hand-made record.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
from typing import List, Tuple

from oea_trt.routing.config import OEAConfig

MAX_SCHEDULE = 16  # OEA_MAX_SCHEDULE

#: logits_type codes of oea_route_launch (enum OeaLogitsType), by torch dtype name.
LOGITS_TYPE = {"float32": 0, "float16": 1, "bfloat16": 2}

#: launch_flags bit of oea_route_launch (enum OeaLaunchFlags): programmatic dependent launch.
LAUNCH_PDL = 1


class OeaRoutingParams(ctypes.Structure):
    """ctypes mirror of OeaRoutingParams (tests compare its layout with the C compiler's)."""

    _fields_ = [
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("k0", ctypes.c_int32),
        ("k_max", ctypes.c_int32),
        ("max_rank", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("renormalize", ctypes.c_int32),
        ("fill", ctypes.c_int32),
        ("piggyback_on_context", ctypes.c_int32),
        ("schedule_len", ctypes.c_int32),
        ("schedule_min_decode", ctypes.c_int32 * MAX_SCHEDULE),
        ("schedule_k0", ctypes.c_int32 * MAX_SCHEDULE),
    ]


@dataclasses.dataclass(frozen=True)
class KernelParams:
    """OeaRoutingParams as an immutable Python record (field for field, same integer codes).

    top_p is kept as OEAConfig holds it; it becomes float32 (the width the kernel and the
    reference compare with) where it crosses into C: the struct, the plugin's float32 field.
    The schedule arrays hold schedule_len entries, ascending by min_decode_tokens.
    """

    num_experts: int
    top_k: int
    k0: int
    k_max: int
    max_rank: int
    top_p: float
    renormalize: int
    fill: int
    piggyback_on_context: int
    schedule_len: int
    schedule_min_decode: Tuple[int, ...]
    schedule_k0: Tuple[int, ...]

    @functools.cached_property
    def struct(self) -> OeaRoutingParams:
        """The ctypes struct for the C API (made once per record; the C side only reads it)."""
        if not (self.schedule_len == len(self.schedule_min_decode) == len(self.schedule_k0) <= MAX_SCHEDULE):
            raise ValueError(
                f"schedule_len must equal the length of schedule_min_decode and schedule_k0 and be at most "
                f"{MAX_SCHEDULE}, got {self.schedule_len}, {len(self.schedule_min_decode)}, {len(self.schedule_k0)}")
        p = OeaRoutingParams()
        p.num_experts, p.top_k, p.k0, p.k_max, p.max_rank = (
            self.num_experts, self.top_k, self.k0, self.k_max, self.max_rank)
        p.top_p = self.top_p  # ctypes rounds to float32
        p.renormalize, p.fill, p.piggyback_on_context = self.renormalize, self.fill, self.piggyback_on_context
        p.schedule_len = self.schedule_len
        p.schedule_min_decode[: self.schedule_len] = self.schedule_min_decode
        p.schedule_k0[: self.schedule_len] = self.schedule_k0
        return p

    def op_args(self) -> tuple:
        """The knob arguments of torch.ops.oea_trt.route, in schema order (op.py)."""
        return (self.num_experts, self.top_k, self.k0, self.k_max, self.max_rank, self.top_p,
                bool(self.renormalize), self.fill, bool(self.piggyback_on_context),
                list(self.schedule_min_decode), list(self.schedule_k0))

    @property
    def k0_schedule_flat(self) -> List[int]:
        """The schedule as the plugin's k0_schedule field stores it: min0, k0_0, min1, k0_1, ..."""
        return [v for pair in zip(self.schedule_min_decode, self.schedule_k0) for v in pair]


@functools.lru_cache(maxsize=256)
def kernel_params(config: OEAConfig) -> KernelParams:
    """The kernel's record of a validated OEAConfig (k_max and max_rank resolved, fill as its code).
    torch.compile traces it (the lru_cache is ignored there), so it stays plain Python."""
    schedule = config.k0_schedule or ()
    return KernelParams(
        num_experts=config.num_experts, top_k=config.top_k, k0=config.k0, k_max=config.k_max,
        max_rank=config.max_rank, top_p=config.top_p, renormalize=int(config.renormalize),
        fill=config.fill_code, piggyback_on_context=int(config.piggyback_on_context), schedule_len=len(schedule),
        schedule_min_decode=tuple(m for m, _ in schedule), schedule_k0=tuple(k for _, k in schedule))


def params_from_op_args(num_experts: int, top_k: int, k0: int, k_max: int, max_rank: int, top_p: float,
                        renormalize: bool, fill: int, piggyback_on_context: bool, schedule_min_decode,
                        schedule_k0) -> KernelParams:
    """Inverse of KernelParams.op_args (the op's implementation; cached, nothing re-validated)."""
    return _params_from_op_args(num_experts, top_k, k0, k_max, max_rank, top_p, renormalize, fill,
                                piggyback_on_context, tuple(schedule_min_decode), tuple(schedule_k0))


@functools.lru_cache(maxsize=256)
def _params_from_op_args(num_experts, top_k, k0, k_max, max_rank, top_p, renormalize, fill, piggyback_on_context,
                         schedule_min_decode, schedule_k0) -> KernelParams:
    return KernelParams(num_experts, top_k, k0, k_max, max_rank, top_p, int(renormalize), fill,
                        int(piggyback_on_context), len(schedule_min_decode), schedule_min_decode, schedule_k0)
