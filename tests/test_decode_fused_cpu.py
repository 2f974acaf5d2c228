"""The fused decode kernels (oea_trt.decode.fused) against ops.py, and a whole decode step on
the fused kernels + our Triton MoE against the plain PyTorch path.

Without a GPU the kernels run in Triton's interpreter in fp16 and fp32 (its bf16 casts truncate
instead of rounding to nearest, numpy having no bfloat16); tests/test_decode_gpu.py checks
bf16 on the GPU. The sm_90 compile test builds the kernels for the H100/H200 without one.
"""
import pytest
import torch

# Sets TRITON_INTERPRET=1 without a GPU:
from moe_triton_cpu import DEVICE, interpreter  # noqa: F401 (autouse fixture)

pytest.importorskip("triton", reason="the fused kernels need the triton package")

from oea_trt import OEAConfig  # noqa: E402
from oea_trt.decode import DecodeEngine, DecodeModel, ModelShape, fused, ops  # noqa: E402
from oea_trt.models.random_model import random_decode_weights  # noqa: E402

from decode_reference import decode_logits, relative_error  # noqa: E402

DTYPES = [torch.float16, torch.float32] if DEVICE == "cpu" else [torch.bfloat16, torch.float16]


def _close(got, want, dtype):
    if dtype == torch.float32:  # reduction order differs: last-bit differences
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(got, want), f"{(got != want).sum()} of {got.numel()} differ"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,width", [(1, 64), (5, 96), (3, 2048)])
def test_add_rms_norm_matches_ops(dtype, tokens, width):
    g = torch.Generator().manual_seed(tokens * width)
    x = (2 * torch.randn(tokens, width, generator=g)).to(DEVICE, dtype)
    delta = torch.randn(tokens, width, generator=g).to(DEVICE, dtype)
    weight = (1 + 0.2 * torch.randn(width, generator=g)).to(DEVICE, dtype)
    total = x + delta
    out = fused.add_rms_norm(x, delta, weight, 1e-6)  # x becomes x + delta
    assert torch.equal(x, total)
    _close(out, ops.rms_norm(total, weight, 1e-6), dtype)
    _close(fused.rms_norm(x, weight, 1e-6), ops.rms_norm(total, weight, 1e-6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 2, 32), (8, 1, 16), (6, 3, 24)])
def test_qk_norm_rope_cache_matches_ops_and_writes_one_slot(dtype, heads, kv_heads, head_dim):
    g = torch.Generator().manual_seed(heads * head_dim)
    B, S, slot = 3, 12, 7
    qkv = torch.randn(B, (heads + 2 * kv_heads) * head_dim, generator=g).to(DEVICE, dtype)
    q_norm = (1 + 0.2 * torch.randn(head_dim, generator=g)).to(DEVICE, dtype)
    k_norm = (1 + 0.2 * torch.randn(head_dim, generator=g)).to(DEVICE, dtype)
    positions = torch.randint(0, 3000, (B,), generator=g).to(DEVICE)
    cos, sin = ops.rope_cos_sin(positions, ops.inv_frequencies(head_dim, 1e6).to(DEVICE), dtype)
    poison = float("nan")
    k_cache = torch.full((B, kv_heads, S, head_dim), poison, dtype=dtype, device=DEVICE)
    v_cache = torch.full_like(k_cache, poison)
    q = fused.qk_norm_rope_cache(qkv, q_norm, k_norm, cos, sin, k_cache, v_cache,
                                 torch.tensor([slot], device=DEVICE), heads, kv_heads, 1e-6)
    q_ref, k_ref, v_ref = ops.qk_norm_rope(qkv, q_norm, k_norm, cos, sin, heads, kv_heads, 1e-6)
    _close(q, q_ref, dtype)
    _close(k_cache[:, :, slot], k_ref, dtype)
    assert torch.equal(v_cache[:, :, slot], v_ref)
    others = [s for s in range(S) if s != slot]
    assert torch.isnan(k_cache[:, :, others]).all() and torch.isnan(v_cache[:, :, others]).all()


def test_qk_norm_rope_cache_rejects_wrong_shapes():
    qkv = torch.zeros(2, 8 * 16, device=DEVICE)
    cos = torch.zeros(2, 16, device=DEVICE)
    cache = torch.zeros(2, 2, 4, 16, device=DEVICE)
    with pytest.raises(ValueError, match="qkv must be"):
        fused.qk_norm_rope_cache(qkv, cos[0], cos[0], cos, cos, cache, cache, torch.tensor([0], device=DEVICE), 6, 2, 1e-6)
    with pytest.raises(ValueError, match="cache_index must be one int64"):
        fused.qk_norm_rope_cache(qkv, cos[0], cos[0], cos, cos, cache, cache, torch.tensor([0.0], device=DEVICE), 4, 2,
                                 1e-6)


def test_decode_step_on_fused_kernels_and_triton_moe_matches_the_plain_path():
    """Left-padded prompts, OEA k0=2 and a dense layer: the fast step's tokens and logits
    against ops.py + the reference MoE loop, over the same weights."""
    dtype = torch.float16 if DEVICE == "cpu" else torch.bfloat16
    shape = ModelShape(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                       moe_intermediate_size=32, num_experts=16, top_k=4, intermediate_size=64, moe_layers=(1,))
    weights = random_decode_weights(shape, device=DEVICE, dtype=dtype, seed=2)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(64, (3, 5), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    config = OEAConfig(16, 4, 2)
    plain = DecodeModel(shape, weights, config, fused=False, decode_moe_impl="loop", prefill_moe_impl="loop")
    fast = DecodeModel(shape, weights, config, fused=True, decode_moe_impl="triton", prefill_moe_impl="loop")
    want_tokens, want = decode_logits(DecodeEngine(plain, use_graphs=False), ids, mask, 4)
    got_tokens, got = decode_logits(DecodeEngine(fast, use_graphs=False), ids, mask, 4)
    assert torch.equal(got_tokens, want_tokens)
    assert (relative_error(got, want) < 5e-3).all(), relative_error(got, want)


@pytest.mark.slow
def test_fused_kernels_compile_for_sm90():
    """The real (non-interpreted) compile for the H100/H200 in a subprocess, at the 30B shape in
    bf16: both kernels compile for sm_90 and spill no registers."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(r"""
        import os
        os.environ.pop("TRITON_INTERPRET", None)
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from oea_trt.decode import fused
        aligned = [["tt.divisibility", 16]]

        def build(fn, signature, constexprs, warps):
            attrs = {(i,): aligned for i, (name, ty) in enumerate(signature.items()) if ty.startswith("*")}
            sig = dict(signature, **{k: "constexpr" for k in constexprs})
            src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
            return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})

        norm = build(fused.add_rms_norm_kernel, {"x_ptr": "*bf16", "delta_ptr": "*bf16", "weight_ptr": "*bf16",
                     "out_ptr": "*bf16", "stride_x": "i32", "stride_delta": "i32", "stride_out": "i32", "eps": "fp32"},
                     {"N": 2048, "BLOCK": 2048, "HAS_DELTA": True}, 4)
        rope = build(fused.qk_norm_rope_cache_kernel, {"qkv_ptr": "*bf16", "q_norm_ptr": "*bf16",
                     "k_norm_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "q_out_ptr": "*bf16",
                     "k_cache_ptr": "*bf16", "v_cache_ptr": "*bf16", "cache_index_ptr": "*i64", "stride_qkv": "i32",
                     "stride_cos": "i32", "stride_cb": "i32", "stride_ch": "i32", "stride_cs": "i32", "eps": "fp32"},
                     {"NUM_HEADS": 32, "NUM_KV_HEADS": 4, "HEAD_DIM": 128, "HALF_BLOCK": 64}, 1)
        import re, subprocess, tempfile
        ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        for name, kernel in (("add_rms_norm", norm), ("qk_norm_rope_cache", rope)):
            ptx = kernel.asm["ptx"]
            assert ".target sm_90" in ptx, name
            with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
                f.write(ptx)
                f.flush()
                report = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull],
                                        capture_output=True, text=True).stderr
            spills = re.search(r"(\d+) bytes spill stores", report)
            assert spills and int(spills.group(1)) == 0, (name, report)
            print(name, "compiled for sm_90")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("compiled for sm_90") == 2
