"""Device memory bandwidth, measured in the same run as the benchmark that is compared with it.

copy: dst.copy_(src) of a bf16 tensor, counting read + write bytes (2 x size); a wide element
  type, as a uint8 copy of the same bytes is far slower.
read: src.sum() (fp32 accumulation), counting the bytes read once.
A MoE decode layer only reads its weights, so its floor uses the copy figure (what the issue
and the paper quote) and the report shows both.
"""
from __future__ import annotations

import dataclasses

import torch

from oea_trt.bench.timing import time_eager


@dataclasses.dataclass(frozen=True)
class Bandwidth:
    copy_tb_s: float
    read_tb_s: float
    nbytes: int
    copy_spread: float
    read_spread: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _time_copy_and_read(n: int, repeats: int, device: str):
    src = torch.randn(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    return (time_eager(lambda: dst.copy_(src), repeats=repeats, iters=3),
            time_eager(lambda: src.sum(), repeats=repeats, iters=3))


def measure_bandwidth(nbytes: int = 4 << 30, repeats: int = 7, device: str = "cuda") -> Bandwidth:
    n = nbytes // 2
    copy, read = _time_copy_and_read(n, repeats, device)
    torch.cuda.empty_cache()
    return Bandwidth(copy_tb_s=2 * n * 2 / (copy.median_us * 1e-6) / 1e12,
                     read_tb_s=n * 2 / (read.median_us * 1e-6) / 1e12,
                     nbytes=n * 2, copy_spread=copy.spread, read_spread=read.spread)
