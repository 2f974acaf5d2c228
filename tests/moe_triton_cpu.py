"""Run the Triton MoE kernel without a GPU: Triton's interpreter (TRITON_INTERPRET=1), fp16.

Import this module before anything imports the kernel modules of oea_trt.moe.triton: the
interpreter is chosen when a kernel is decorated. On a CUDA machine it changes nothing and the kernel runs
compiled, in bf16.
"""
import contextlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: The interpreter's tl.dot mishandles bf16 (numpy has no bfloat16); the kernel is dtype-generic.
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float16


@contextlib.contextmanager
def interpreter_numpy_fix():
    """Triton 3.6's interpreter turns a loop bound into an int with int(array of shape (1,)),
    which NumPy >= 2.4 refuses; read the single element instead (interpreter only)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        yield
        return
    import triton.runtime.interpreter as interp

    original = interp._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched
    try:
        yield
    finally:
        interp._patch_lang_tensor = original


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    """Import into a test module (``from moe_triton_cpu import interpreter``) to run its tests
    under interpreter_numpy_fix."""
    with interpreter_numpy_fix():
        yield


#: Max error relative to max |ref|: fp16 (interpreter) keeps 11 bits, bf16 (GPU) 8.
TOL = 2e-2 if DTYPE == torch.bfloat16 else 1e-2


def routing_case(shape, num_tokens, k0, fill, seed):
    """(hidden states [T, H], RoutingResult) of fresh random logits for a MoEShape, on DEVICE."""
    from oea_trt import OEAConfig, oea_route

    logits = torch.randn(num_tokens, shape.num_experts, generator=torch.Generator().manual_seed(seed))
    routing = oea_route(logits.to(DEVICE), OEAConfig(shape.num_experts, shape.top_k, k0, fill=fill))
    x = torch.randn(num_tokens, shape.hidden_size, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, DTYPE)
    return x, routing


def assert_close(out, ref, tol=TOL):
    """Max error within tol of the reference's largest magnitude."""
    scale = ref.float().abs().max()
    err = (out.float() - ref.float()).abs().max()
    assert err <= tol * scale, f"max error {float(err):.3g} vs max |ref| {float(scale):.3g}"
