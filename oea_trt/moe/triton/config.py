"""Launch configuration of our expert-major Triton MoE kernels: KernelConfig, the heuristic
default for a (batch, layer shape), and fitting a config to a shape.

Pure Python (no triton import), so tuned-config files (oea_trt/moe/tuned.py) are read and
written without a GPU or a compiler. Two structures walk the same work items:
  down="slots"       3 launches: gate/up, per-(token, slot) down, combine (three_launch.py)
  down="one_launch"  1 persistent launch: gate/up and down items, each token's output tile
                     summed by the program that finishes it last (one_launch.py)
"""
from __future__ import annotations

import dataclasses
from typing import Optional

#: KernelConfig.down -> kernel launches per call.
LAUNCHES = {"slots": 3, "one_launch": 1}
DOWN_MODES = tuple(LAUNCHES)
#: SMs the heuristic sizes its tiles for (H100 SXM and H200 both have 132); grids use the real count.
DEFAULT_SMS = 132
#: Shared memory a kernel's pipeline may use (H100/H200 allow 227 KB per block).
SMEM_BUDGET = 192 * 1024
#: Token rows per tile: tl.dot needs >= 16; 64 covers every decode batch in one tile.
MIN_BLOCK, MAX_BLOCK_M = 16, 64
#: A preloaded down tile (dn_preload) lives in registers: at most this many bytes a thread
#: (96 of its 255 registers), in at most PRELOAD_MAX_CHUNKS K steps.
PRELOAD_BYTES_PER_THREAD, PRELOAD_MAX_CHUNKS = 384, 4


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options.

    block_m: token rows per tile (a decode batch of <= 64 tokens fits one tile, so every
        expert's weights are read once per call).
    gu_*: gate/up work items, block_n over the intermediate dim, block_k over hidden; on the
        one-launch path gu_warps / gu_stages apply to the whole kernel.
    down: "slots" (3 launches) or "one_launch" (1 launch).
    dn_*: down work items, block_n over hidden, block_k over the intermediate dim.
    combine_block_h: three-launch path, hidden columns per combine program (256: a token's
        output in 8 programs on the 30B layer; 1024 measured 2-4% slower at B=1 and 0.5-1%
        at B=64 on an H100, benchmarks/results/tile_sweep_h100/ and preload_three_launch_h100/).
    pdl: programmatic dependent launch (None: on where it works, i.e. compiled for sm_90+).
    max_programs: grid of the persistent kernels (None: one wave, at most one program per
        work item); any grid is correct, more programs than can be resident included.
    programs_per_sm: one-launch path, programs per SM in its wave (None: as many as fit).
        Fewer programs per SM shorten each item and the tail while the last items drain.
    early_stream: where the batch is one token block, work items issue their weight loads
        before their expert's token list is known (one_block()).
    early_active: one-launch path, one token block, routing launched with active_ready: the
        kernel streams gate/up on the routing's published active set before the routing ends
        (one_launch.early_active).
    dn_preload: three-launch path, one token block: each down program loads its first item's
        whole w2 tile into registers before it waits for the gate/up kernel (programmatic
        dependent launch makes the down programs resident while gate/up still streams), so
        after the wait it reads only the act rows. fitted() turns it off where the tile would
        take more than PRELOAD_BYTES_PER_THREAD a thread or more than 4 K steps.
    handoff: three-launch path: a down item waits only for its own expert's gate/up items
        (per-expert counters), not for the whole gate/up kernel, so the down items of experts
        that gate/up finished first run during gate/up's last wave and tail. The counters live
        in the per-device workspace (sync.py): calls on one device must be stream-ordered, as
        with the one-launch path.
    """

    block_m: int = 16
    gu_block_n: int = 32
    gu_block_k: int = 128
    gu_warps: int = 4
    gu_stages: int = 4
    down: str = "slots"
    dn_block_n: int = 64
    dn_block_k: int = 128
    dn_warps: int = 4
    dn_stages: int = 4
    combine_block_h: int = 256
    pdl: Optional[bool] = None
    max_programs: Optional[int] = None
    programs_per_sm: Optional[int] = None
    early_stream: bool = True
    early_active: bool = True
    dn_preload: bool = False
    handoff: bool = False

    def __post_init__(self):
        if self.down not in DOWN_MODES:
            raise ValueError(f"KernelConfig.down must be one of {DOWN_MODES}, got {self.down!r}")
        for name in ("block_m", "gu_block_n", "gu_block_k", "dn_block_n", "dn_block_k", "combine_block_h"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < MIN_BLOCK or value != next_pow2(value):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= {MIN_BLOCK}, got {value!r}")
        for name in ("gu_warps", "dn_warps"):
            if getattr(self, name) not in (1, 2, 4, 8, 16):
                raise ValueError(f"KernelConfig.{name} must be 1, 2, 4, 8 or 16, got {getattr(self, name)!r}")
        for name in ("gu_stages", "dn_stages", "max_programs", "programs_per_sm"):
            value = getattr(self, name)
            optional = name in ("max_programs", "programs_per_sm")
            if not (optional and value is None) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"KernelConfig.{name} must be an int >= 1{' or None' if optional else ''}, "
                                 f"got {value!r}")

    @property
    def launches(self) -> int:
        """Kernel launches per call."""
        return LAUNCHES[self.down]

    def replace(self, **changes) -> "KernelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> "KernelConfig":
        """A config from to_dict()'s fields (a subset: the rest keep their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown KernelConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**fields)


def default_config(num_tokens: int, hidden: int, inter: int, top_k: int, num_experts: int) -> KernelConfig:
    """The heuristic used where no tuned config exists. Few active experts -> narrower gate/up
    N-tiles, so enough programs stream in parallel. One launch (2 programs per SM) up to 16
    tokens, where the three launches' fixed cost (two kernel boundaries and the combine)
    dominates; three launches above, where the one-launch kernel's wider token tiles leave
    one program per SM, with the per-expert hand-off (H100, B=32 and 64: 2-4% faster)."""
    max_active = min(num_experts, max(1, num_tokens) * top_k)
    block_m = min(MAX_BLOCK_M, max(MIN_BLOCK, next_pow2(num_tokens)))
    gu_n = 32 if max_active * (inter // 32) >= 4 * DEFAULT_SMS else 16
    gu_k = 128 if gu_n >= 32 else 256
    dn_n = 64 if inter >= 512 else 128
    down = "one_launch" if block_m <= 16 else "slots"
    return KernelConfig(block_m=block_m, gu_block_n=gu_n, gu_block_k=gu_k, dn_block_n=dn_n, dn_block_k=128, down=down,
                        programs_per_sm=2 if down == "one_launch" else None, handoff=down == "slots")


def fit_tile(block: int, dim: int, name: str) -> int:
    """Largest power-of-two tile <= block (and >= 16) that divides dim."""
    b = block
    while b >= MIN_BLOCK and dim % b:
        b //= 2
    if b < MIN_BLOCK:
        raise ValueError(f"{name}={dim} must be a multiple of {MIN_BLOCK} for the Triton MoE kernel")
    return b


def fitted(config: KernelConfig, num_tokens: int, hidden: int, inter: int) -> KernelConfig:
    """config with block_m raised to cover the batch (up to 64 tokens), tiles that divide the
    shape and pipeline stages that fit in shared memory."""
    cfg = config.replace(
        block_m=max(config.block_m, min(MAX_BLOCK_M, max(MIN_BLOCK, next_pow2(num_tokens)))),
        gu_block_n=fit_tile(config.gu_block_n, inter, "moe_intermediate_size"),
        gu_block_k=fit_tile(config.gu_block_k, hidden, "hidden_size"),
        dn_block_n=fit_tile(config.dn_block_n, hidden, "hidden_size"),
        dn_block_k=fit_tile(config.dn_block_k, inter, "moe_intermediate_size"),
    )
    # bf16 tiles of one pipeline stage; a wide token tile gets fewer stages. Where even two
    # stages would not fit (a wide token tile), the larger loop's step halves.
    while 2 * max(stage_bytes(cfg)) > SMEM_BUDGET:
        gate_up, down = stage_bytes(cfg)
        if gate_up >= down and cfg.gu_block_k > MIN_BLOCK:
            cfg = cfg.replace(gu_block_k=cfg.gu_block_k // 2)
        elif cfg.dn_block_k > MIN_BLOCK:
            cfg = cfg.replace(dn_block_k=cfg.dn_block_k // 2)
        else:
            break
    if cfg.dn_preload:
        cfg = preload_fitted(cfg, inter, one_block(cfg, num_tokens))
    gate_up, down = stage_bytes(cfg)
    if cfg.down == "one_launch":  # one kernel, one stage count for both loops
        gate_up = max(gate_up, down)
    return cfg.replace(gu_stages=stages_within(cfg.gu_stages, gate_up),
                       dn_stages=stages_within(cfg.dn_stages, down))


def preload_fitted(cfg: KernelConfig, inter: int, single_block: bool) -> KernelConfig:
    """dn_preload kept only where it can work: the three-launch path, one token block
    (single_block: one_block()), a w2 tile of at most PRELOAD_BYTES_PER_THREAD a thread, read in
    at most PRELOAD_MAX_CHUNKS K steps (dn_block_k widened to the smallest tile that does it)."""
    tile_bytes = 2 * cfg.dn_block_n * inter
    block_k = cfg.dn_block_k
    while inter // block_k > PRELOAD_MAX_CHUNKS and inter % (2 * block_k) == 0:
        block_k *= 2
    if (cfg.down != "slots" or not single_block or inter // block_k > PRELOAD_MAX_CHUNKS
            or tile_bytes > PRELOAD_BYTES_PER_THREAD * 32 * cfg.dn_warps):
        return cfg.replace(dn_preload=False)
    return cfg.replace(dn_block_k=block_k)


def stage_bytes(cfg: KernelConfig) -> tuple:
    """(gate/up, down) bytes of one pipeline stage of each loop."""
    gate_up = 2 * (cfg.block_m + 2 * cfg.gu_block_n) * cfg.gu_block_k
    return gate_up, 2 * (cfg.block_m + cfg.dn_block_n) * cfg.dn_block_k


def stages_within(stages: int, bytes_per_stage: int) -> int:
    """At most `stages` pipeline stages of bytes_per_stage within SMEM_BUDGET (at least 2)."""
    return max(2, min(stages, SMEM_BUDGET // bytes_per_stage))


def one_block(cfg: KernelConfig, num_tokens: int) -> bool:
    """The kernels' ONE_BLOCK: the batch is one token block (every decode batch: block_m covers
    up to 64 tokens), so a work item streams its weights without waiting for its expert's token
    list (config.early_stream; False only to compare)."""
    return cfg.early_stream and num_tokens <= cfg.block_m
