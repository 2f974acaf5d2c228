"""The kernel's Python side without a GPU: dispatch falls back to the reference, the custom op's
fake implementation gives the kernel's shapes (what torch.compile traces), parameters carry
every knob, and library lookup / build errors say what to do."""
import ctypes
import os

import pytest
import torch

import oea_trt
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.dispatch import route
from oea_trt.routing import library as kernel_library
from oea_trt.routing.launch import token_kind_int32
from oea_trt.routing.library import KernelUnavailable, nvcc_command, params_for
from oea_trt.routing.reference import RoutingInputError, oea_route

CFG = OEAConfig(num_experts=64, top_k=6, k0=2, k_max=9, max_rank=40, top_p=0.7, fill="top1",
                renormalize=False, piggyback_on_context=False, k0_schedule=((3, 5), (10, 1)))


def test_route_is_exported_from_the_package():
    assert oea_trt.route is route


def test_importing_the_package_loads_neither_the_kernel_nor_the_compiler():
    import subprocess
    import sys

    code = ("import sys, oea_trt; loaded = [m for m in ('oea_trt.routing.kernel', 'torch._dynamo', 'triton') "
            "if m in sys.modules]; print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_route_on_cpu_tensors_is_the_reference():
    logits = torch.randn(33, 64)
    kinds = torch.randint(0, 3, (33,), dtype=torch.int32)
    for backend in ("auto", "reference"):
        got, want = route(logits, CFG, kinds, backend=backend), oea_route(logits, CFG, kinds)
        assert torch.equal(got.expert_ids, want.expert_ids)
        assert torch.equal(got.weights, want.weights)
        assert torch.equal(got.active_mask, want.active_mask)


def test_route_rejects_unknown_backends_and_the_kernel_on_cpu():
    with pytest.raises(ValueError, match="backend must be one of auto, kernel, reference"):
        route(torch.randn(2, 64), CFG, backend="cuda")
    with pytest.raises(RoutingInputError, match="needs CUDA tensors"):
        route(torch.randn(2, 64), CFG, backend="kernel")


def test_fake_op_gives_the_kernel_output_shapes():
    import oea_trt.routing.op  # noqa: F401 (registers torch.ops.oea_trt.route)

    logits = torch.empty(17, 64, device="meta", dtype=torch.bfloat16)
    ids, weights, mask, num_active = torch.ops.oea_trt.route(
        logits, None, 0, 64, 6, 2, 9, 40, 0.7, False, 2, False, [3, 10], [5, 1], None)
    assert (ids.shape, ids.dtype) == ((17, 9), torch.int32)
    assert (weights.shape, weights.dtype) == ((17, 9), torch.float32)
    assert (mask.shape, mask.dtype) == ((64,), torch.bool)
    assert (num_active.shape, num_active.dtype) == ((), torch.int32)


def test_custom_op_schema_has_every_knob():
    import oea_trt.routing.op  # noqa: F401

    schema = str(torch.ops.oea_trt.route.default._schema)
    assert schema.startswith("oea_trt::route(Tensor router_logits, Tensor? token_kind, SymInt num_leading_context")
    assert "-> (Tensor, Tensor, Tensor, Tensor)" in schema


def test_torch_compile_traces_the_kernel_op_in_one_graph():
    """What torch.compile sees on a GPU, traced here with meta tensors (the op's fake kernel)."""
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, k0_schedule=((4, 8), (16, 3)))

    def moe_routing(hidden, gate):
        result = oea_trt.route(hidden @ gate, cfg, backend="kernel")
        return result.expert_ids, result.weights * 2.0, result.num_active

    compiled = torch.compile(moe_routing, fullgraph=True, backend="aot_eager")
    ids, weights, num_active = compiled(torch.randn(48, 256, device="meta"), torch.randn(256, 128, device="meta"))
    assert (ids.shape, ids.dtype, weights.shape, num_active.shape) == ((48, 8), torch.int32, (48, 8), ())


def test_params_carry_every_knob():
    p = params_for(CFG)
    assert (p.num_experts, p.top_k, p.k0, p.k_max, p.max_rank) == (64, 6, 2, 9, 40)
    assert p.top_p == ctypes.c_float(0.7).value  # float32, the width the reference compares with
    assert (p.renormalize, p.fill, p.piggyback_on_context) == (0, 2, 0)
    assert p.schedule_len == 2
    assert list(p.schedule_min_decode)[:2] == [3, 10] and list(p.schedule_k0)[:2] == [5, 1]
    vanilla = params_for(OEAConfig.vanilla(128, 8))
    assert (vanilla.k0, vanilla.k_max, vanilla.max_rank, vanilla.top_p, vanilla.fill) == (8, 8, 128, 1.0, 0)


def test_int64_token_kinds_outside_int32_stay_padding():
    kinds = torch.tensor([0, 1, 2, -1, 2**32, 2**32 + 1, 7], dtype=torch.int64)
    assert token_kind_int32(kinds).tolist() == [0, 1, 2, 2, 2, 2, 2]
    assert token_kind_int32(torch.tensor([0, 1, 5], dtype=torch.uint8)).dtype == torch.int32
    assert token_kind_int32(None) is None


def test_library_env_must_point_at_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_library.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(KernelUnavailable, match="OEA_ROUTING_LIBRARY=.*is not a file"):
        kernel_library.find_prebuilt()


def test_stale_repository_build_is_not_used(monkeypatch, tmp_path):
    monkeypatch.delenv(kernel_library.LIBRARY_ENV, raising=False)
    stale = tmp_path / "liboea_routing.so"
    stale.write_bytes(b"old")
    os.utime(stale, (1, 1))  # older than every source file
    monkeypatch.setattr(kernel_library, "build_dir_candidates", lambda: [stale])
    assert kernel_library.find_prebuilt() is None
    os.utime(stale, None)  # now newer
    assert kernel_library.find_prebuilt() == stale


def test_build_without_nvcc_says_how_to_get_the_library(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel_library, "find_nvcc", lambda: None)
    with pytest.raises(KernelUnavailable, match="no nvcc to build liboea_routing.so"):
        kernel_library.build_library("90", root=tmp_path)


def test_nvcc_command_builds_the_launcher_for_one_arch(tmp_path):
    cmd = nvcc_command("nvcc", "90", tmp_path / "x.so")
    assert "-gencode=arch=compute_90,code=sm_90" in cmd and "-shared" in cmd
    assert not any("fast-math" in c or "fast_math" in c for c in cmd)  # scores must match torch bit for bit
    assert cmd[-1].endswith("plugin/oea_routing.cu")


@pytest.mark.slow
def test_one_time_nvcc_build_is_cached_and_loads(tmp_path):
    if kernel_library.find_nvcc() is None:
        pytest.skip("needs nvcc")
    first = kernel_library.build_library("90", root=tmp_path)
    assert first.is_file() and first.parent.name.endswith("-sm90")
    assert kernel_library.build_library("90", root=tmp_path) == first  # cached: no second compile
    lib = kernel_library.KernelLibrary(first)
    assert lib.validate(params_for(CFG)) is None
    assert lib.workspace_size(params_for(CFG), 10) > 0


def test_only_routing_with_a_piggyback_phase_publishes_its_active_set_early():
    from oea_trt.routing.op import publishes_early

    assert publishes_early(OEAConfig(num_experts=128, top_k=8, k0=3))
    assert publishes_early(OEAConfig(num_experts=128, top_k=8, k0=8, k_max=10))
    assert publishes_early(OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((16, 3),)))
    assert not publishes_early(OEAConfig(num_experts=128, top_k=8, k0=8))


def test_active_ready_flag_is_one_zeroed_int32_per_device():
    from oea_trt.routing.kernel import active_ready_flag

    flag = active_ready_flag(torch.device("cpu"))
    assert flag.dtype == torch.int32 and flag.shape == (1,) and int(flag[0]) == 0
    assert active_ready_flag("cpu") is flag  # kept: a captured graph keeps using the one it saw
