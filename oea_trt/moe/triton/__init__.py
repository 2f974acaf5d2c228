"""Our expert-major Triton MoE kernels (see three_launch.py and one_launch.py)."""
from oea_trt.moe.triton.three_launch import KernelConfig, default_config, fused_moe

__all__ = ["KernelConfig", "default_config", "fused_moe"]
