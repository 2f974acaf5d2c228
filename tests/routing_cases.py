"""Seeded random routing cases covering every knob, dtype, token-kind mix, ties and NaN rows.

Shared by the oracle test (CPU) and the kernel tests (GPU) so both sweep the same space.
"""
import numpy as np
import torch

from oea_trt.routing.config import FILL_MODES, OEAConfig

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def random_config(rng: np.random.Generator, num_experts: int, max_k: int = 8) -> OEAConfig:
    E = num_experts
    k = int(rng.integers(1, min(max_k, E) + 1))
    k_max = k if rng.random() < 0.6 else int(rng.integers(k, min(E, 2 * k + 4) + 1))
    k0 = int(rng.integers(1, k_max + 1))
    max_rank = E if rng.random() < 0.6 else int(rng.integers(1, E + 1))
    top_p = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.05, 1.0))
    schedule = None
    if rng.random() < 0.25:
        mins = sorted(set(int(m) for m in rng.integers(0, 40, size=rng.integers(1, 4))))
        schedule = tuple((m, int(rng.integers(1, k_max + 1))) for m in mins)
    return OEAConfig(
        num_experts=E, top_k=k, k0=k0, k_max=k_max, max_rank=max_rank, top_p=top_p,
        renormalize=bool(rng.random() < 0.7), fill=FILL_MODES[int(rng.integers(len(FILL_MODES)))],
        piggyback_on_context=bool(rng.random() < 0.7), k0_schedule=schedule,
    )


def random_tokens(rng: np.random.Generator, max_tokens: int = 512) -> int:
    u = rng.random()
    if u < 0.45 or max_tokens <= 16:
        return int(rng.integers(0, min(16, max_tokens) + 1))
    if u < 0.85 or max_tokens <= 64:
        return int(rng.integers(17, min(64, max_tokens) + 1))
    return int(rng.integers(65, max_tokens + 1))


def random_logits(rng: np.random.Generator, T: int, E: int, dtype) -> torch.Tensor:
    style = rng.random()
    if style < 0.2:  # heavy ties: few distinct values
        x = np.round(rng.standard_normal((T, E)) * 2) / 2
    elif style < 0.3:  # a peaked router
        x = rng.standard_normal((T, E)) * 8
    else:
        x = rng.standard_normal((T, E)) * rng.uniform(0.5, 3)
    if T and rng.random() < 0.3:  # NaN / inf rows and entries
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(T))
            kind = rng.integers(5)
            if kind == 0:
                x[i, :] = np.nan
            elif kind == 1:
                x[i, rng.random(E) < 0.7] = np.nan
            elif kind == 2:
                x[i, rng.random(E) < 0.9] = -np.inf
            elif kind == 3:
                x[i, int(rng.integers(E))] = np.inf
            else:
                x[i, rng.random(E) < 0.5] = -np.inf
                x[i, int(rng.integers(E))] = np.nan
    return torch.from_numpy(x.astype(np.float32)).to(dtype)


def random_token_kind(rng: np.random.Generator, T: int):
    u = rng.random()
    if u < 0.35:
        return None
    if u < 0.5:
        return torch.zeros(T, dtype=torch.int32)
    if u < 0.7:  # TensorRT-LLM packing: context rows first, then decode rows
        n_ctx = int(rng.integers(0, T + 1))
        return torch.tensor([1] * n_ctx + [0] * (T - n_ctx), dtype=torch.int32)
    p = rng.dirichlet([1, 1, 1])
    kinds = rng.choice(3, size=T, p=p)
    if T and rng.random() < 0.2:
        kinds[rng.integers(T)] = int(rng.choice([-1, 3, 7]))  # unknown kinds count as padding
    return torch.from_numpy(kinds.astype(np.int32))


def random_case(seed: int, num_experts_choices=(8, 64, 128, 256), max_tokens: int = 512, max_k: int = 8):
    rng = np.random.default_rng(seed)
    E = int(rng.choice(num_experts_choices))
    cfg = random_config(rng, E, max_k)
    T = random_tokens(rng, max_tokens)
    dtype = DTYPES[int(rng.integers(len(DTYPES)))]
    return random_logits(rng, T, E, dtype), cfg, random_token_kind(rng, T)
