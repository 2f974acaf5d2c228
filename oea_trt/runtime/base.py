"""What every runtime returns and accepts: one interface for the TensorRT-LLM engine and the
pure-PyTorch fallback, so examples and tools run the same code anywhere."""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence


@dataclasses.dataclass
class Generation:
    prompt: str
    text: str                     # the generated continuation (prompt excluded)
    token_ids: List[int]          # generated token ids (prompt excluded, end id excluded)
    finished: bool                # stopped at the end id (False: hit max_new_tokens)


@dataclasses.dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0      # 0 = greedy
    top_k: int = 0                # 0 = off
    top_p: float = 1.0
    seed: Optional[int] = None

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")


def check_prompts(prompts: Sequence[str]) -> List[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    return prompts


def format_prompts(tokenizer, prompts: Sequence[str], chat: bool) -> List[str]:
    """Optionally wrap each prompt in the model's chat template (one user turn)."""
    if not chat:
        return list(prompts)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True but the tokenizer has no chat template; pass raw prompts with chat=False")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def cut_at_end(ids: Sequence[int], end_ids) -> (List[int], bool):
    out = []
    for t in ids:
        if int(t) in end_ids:
            return out, True
        out.append(int(t))
    return out, False


@dataclasses.dataclass
class GenerationTiming:
    """How long the last generate() call took: prompt to first token, then the decode steps."""

    batch: int
    prefill_s: float
    decode_s: float
    decode_steps: int             # steps after the first token (each gives every row one token)

    @property
    def tpot_ms(self) -> float:
        """Time per output token of one sequence (one decode step), milliseconds."""
        return self.decode_s / self.decode_steps * 1e3 if self.decode_steps else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second over the whole batch, decode steps only."""
        return self.batch * self.decode_steps / self.decode_s if self.decode_steps and self.decode_s > 0 else float("nan")

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), tpot_ms=self.tpot_ms, tokens_per_s=self.tokens_per_s)
