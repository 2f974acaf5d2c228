"""Run the Triton MoE kernel without a GPU: Triton's interpreter (TRITON_INTERPRET=1), fp16.

Import this module before anything imports oea_trt.moe.triton_kernel: the interpreter is
chosen when a kernel is decorated. On a CUDA machine it changes nothing and the kernel runs
compiled, in bf16.
"""
import contextlib
import os

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
