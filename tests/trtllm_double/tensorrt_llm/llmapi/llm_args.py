"""TorchLlmArgs: the LLM arguments pickled to every executor worker (pydantic, extra fields refused)."""
from typing import Any, Dict, Optional

from pydantic import BaseModel, ConfigDict


class TorchLlmArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    model_kwargs: Optional[Dict[str, Any]] = None
    moe_backend: str = "CUTLASS"
    moe_expert_parallel_size: int = 1
    enable_attention_dp: bool = False
