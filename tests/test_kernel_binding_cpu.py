"""The kernel's Python side without a GPU: dispatch falls back to the reference, the custom op's
fake implementation gives the kernel's shapes (what torch.compile traces), the parameter record
is the C struct field for field and is made once per config, inputs are checked once per call,
and library lookup / build errors say what to do."""
import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import oea_trt
from oea_trt.routing import library as kernel_library
from oea_trt.routing import launch as kernel_launch
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.dispatch import route
from oea_trt.routing.launch import token_kind_int32, use_pdl
from oea_trt.routing.library import KernelLibrary, KernelUnavailable, cmake_commands
from oea_trt.routing.params import (LAUNCH_PDL, LOGITS_TYPE, MAX_SCHEDULE, KernelParams, kernel_params,
                                    params_from_op_args)
from oea_trt.routing.reference import RoutingInputError, oea_route

REPO = Path(__file__).resolve().parents[1]
HEADER = (REPO / "plugin" / "oea_routing.h").read_text()
CFG = OEAConfig(num_experts=64, top_k=6, k0=2, k_max=9, max_rank=40, top_p=0.7, fill="top1",
                renormalize=False, piggyback_on_context=False, k0_schedule=((3, 5), (10, 1)))


def test_route_is_exported_from_the_package():
    assert oea_trt.route is route


def test_importing_the_package_loads_neither_the_kernel_nor_the_compiler():
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
        logits, None, 0, *kernel_params(CFG).op_args(), None, None)
    assert (ids.shape, ids.dtype) == ((17, 9), torch.int32)
    assert (weights.shape, weights.dtype) == ((17, 9), torch.float32)
    assert (mask.shape, mask.dtype) == ((64,), torch.bool)
    assert (num_active.shape, num_active.dtype) == ((), torch.int32)


def test_custom_op_schema_has_every_knob():
    import oea_trt.routing.op  # noqa: F401

    schema = str(torch.ops.oea_trt.route.default._schema)
    assert schema.startswith("oea_trt::route(Tensor router_logits, Tensor? token_kind, SymInt num_leading_context")
    assert schema.endswith("Tensor(a14!)? active_ready, bool? pdl) -> (Tensor, Tensor, Tensor, Tensor)"), schema


def test_torch_compile_traces_the_kernel_op_in_one_graph():
    """What torch.compile sees on a GPU, traced here with meta tensors (the op's fake kernel)."""
    cfg = OEAConfig(num_experts=128, top_k=8, k0=3, k0_schedule=((4, 8), (16, 3)))

    def moe_routing(hidden, gate):
        result = oea_trt.route(hidden @ gate, cfg, backend="kernel", pdl=False)
        return result.expert_ids, result.weights * 2.0, result.num_active

    compiled = torch.compile(moe_routing, fullgraph=True, backend="aot_eager")
    ids, weights, num_active = compiled(torch.randn(48, 256, device="meta"), torch.randn(256, 128, device="meta"))
    assert (ids.shape, ids.dtype, weights.shape, num_active.shape) == ((48, 8), torch.int32, (48, 8), ())


def test_the_route_path_checks_its_inputs_once(monkeypatch):
    """route -> route_kernel -> op: one check_inputs (meta tensors: the op's fake runs; its real
    implementation checks only the device, see tests/test_kernel_gpu.py for the CUDA count)."""
    from oea_trt.routing import op, reference

    calls = []
    real = reference.check_inputs
    counting = lambda *a: calls.append(1) or real(*a)  # noqa: E731
    for module in (op, kernel_launch, reference):
        monkeypatch.setattr(module, "check_inputs", counting)
    route(torch.empty(5, 64, device="meta"), CFG, backend="kernel")
    assert len(calls) == 1


# ---- the parameter record --------------------------------------------------------------------
def header_struct_fields() -> list:
    body = re.search(r"typedef struct OeaRoutingParams \{(.*?)\} OeaRoutingParams;", HEADER, re.S).group(1)
    return re.findall(r"^\s*(?:int32_t|float)\s+(\w+)(?:\[\w+\])?;", body, re.M)


def test_kernel_params_has_exactly_the_c_struct_fields():
    import dataclasses

    fields = header_struct_fields()
    assert len(fields) == 12, fields
    assert [f.name for f in dataclasses.fields(KernelParams)] == fields
    assert [name for name, _ in kernel_library.OeaRoutingParams._fields_] == fields


def test_python_constants_match_the_header():
    define = lambda name: int(re.search(rf"#define {name} (\d+)", HEADER).group(1))  # noqa: E731
    assert kernel_library.API_VERSION == define("OEA_ROUTING_API_VERSION")
    assert MAX_SCHEDULE == define("OEA_MAX_SCHEDULE")
    assert re.search(rf"OEA_LAUNCH_PDL = 1u << {LAUNCH_PDL.bit_length() - 1},", HEADER)
    assert "OEA_LOGITS_FP32 = {float32}, OEA_LOGITS_FP16 = {float16}, OEA_LOGITS_BF16 = {bfloat16}".format(
        **LOGITS_TYPE) in HEADER


def test_params_carry_every_knob():
    params = kernel_params(CFG)
    assert (params.num_experts, params.top_k, params.k0, params.k_max, params.max_rank) == (64, 6, 2, 9, 40)
    assert params.top_p == 0.7
    assert (params.renormalize, params.fill, params.piggyback_on_context) == (0, 2, 0)
    assert (params.schedule_len, params.schedule_min_decode, params.schedule_k0) == (2, (3, 10), (5, 1))
    p = params.struct
    assert (p.num_experts, p.top_k, p.k0, p.k_max, p.max_rank) == (64, 6, 2, 9, 40)
    assert p.top_p == ctypes.c_float(0.7).value != 0.7  # float32, the width the reference compares with
    assert (p.renormalize, p.fill, p.piggyback_on_context, p.schedule_len) == (0, 2, 0, 2)
    assert list(p.schedule_min_decode) == [3, 10] + [0] * 14 and list(p.schedule_k0) == [5, 1] + [0] * 14
    vanilla = kernel_params(OEAConfig.vanilla(128, 8))
    assert (vanilla.k0, vanilla.k_max, vanilla.max_rank, vanilla.top_p, vanilla.fill) == (8, 8, 128, 1.0, 0)
    assert vanilla.schedule_len == 0 and vanilla.struct.schedule_len == 0


def test_params_are_made_once_per_config_and_the_op_args_come_back_to_them():
    params = kernel_params(CFG)
    assert kernel_params(OEAConfig(**CFG.to_dict())) is params  # cached on the (equal) config
    assert params.struct is params.struct  # one ctypes struct per record
    back = params_from_op_args(*params.op_args())
    assert back == params and params_from_op_args(*params.op_args()) is back  # cached: nothing rebuilt


def test_a_hand_made_record_with_a_bad_schedule_length_is_refused():
    params = kernel_params(CFG)
    import dataclasses

    with pytest.raises(ValueError, match="schedule_len must equal"):
        dataclasses.replace(params, schedule_len=3).struct


def test_int64_token_kinds_outside_int32_stay_padding():
    kinds = torch.tensor([0, 1, 2, -1, 2**32, 2**32 + 1, 7], dtype=torch.int64)
    assert token_kind_int32(kinds).tolist() == [0, 1, 2, 2, 2, 2, 2]
    assert token_kind_int32(torch.tensor([0, 1, 5], dtype=torch.uint8)).dtype == torch.int32
    assert token_kind_int32(None) is None


def test_pdl_is_on_where_supported_and_refused_where_not(monkeypatch):
    device = torch.device("cuda", 0)
    monkeypatch.setattr(kernel_launch, "device_supports_pdl", lambda d: True)
    assert use_pdl(None, device) is True and use_pdl(False, device) is False and use_pdl(True, device) is True
    monkeypatch.setattr(kernel_launch, "device_supports_pdl", lambda d: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert use_pdl(None, device) is False
    with pytest.raises(ValueError, match=r"pdl=True needs a GPU of compute capability 9.0\+.*cuda:0 is 8.0"):
        use_pdl(True, device)


# ---- finding and building the library ----------------------------------------------------------
def test_library_env_must_point_at_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_library.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(KernelUnavailable, match="OEA_ROUTING_LIBRARY=.*is not a file"):
        kernel_library.find_prebuilt()


def test_an_installed_library_older_than_the_sources_is_not_used(tmp_path):
    installed = tmp_path / "lib" / "liboea_routing.so"
    installed.parent.mkdir()
    installed.write_bytes(b"old")
    os.utime(installed, (1, 1))  # older than every source file
    with pytest.warns(RuntimeWarning, match="older than the kernel sources"):
        assert kernel_library.installed_library(installed) is None
    os.utime(installed, None)  # now newer
    assert kernel_library.installed_library(installed) == installed
    assert kernel_library.installed_library(tmp_path / "absent.so") is None


def test_the_checkout_is_where_an_editable_install_finds_the_sources():
    assert kernel_library.kernel_sources() == REPO / "plugin"
    assert kernel_library.INSTALLED_LIBRARY == REPO / "oea_trt" / "routing" / "lib" / "liboea_routing.so"


def test_build_without_nvcc_or_cmake_says_how_to_get_the_library(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel_library, "find_nvcc", lambda: None)
    with pytest.raises(KernelUnavailable, match="no nvcc to build liboea_routing.so"):
        kernel_library.build_library("90", root=tmp_path)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "cmake" else real_which(name, *a, **k))
    with pytest.raises(KernelUnavailable, match="no cmake on PATH"):
        kernel_library.build_library("90", root=tmp_path)


def test_build_uses_the_kernel_cmake_project_for_one_arch(tmp_path):
    configure, build = cmake_commands(REPO / "plugin", tmp_path, "90", "/opt/nvcc", debug_knobs=True)
    assert configure[:5] == ["cmake", "-S", str(REPO / "plugin"), "-B", str(tmp_path)]
    assert {"-DCMAKE_CUDA_ARCHITECTURES=90", "-DCMAKE_CUDA_COMPILER=/opt/nvcc",
            "-DOEA_ROUTING_DEBUG_KNOBS=ON"} <= set(configure)
    assert build[:5] == ["cmake", "--build", str(tmp_path), "--target", kernel_library.CMAKE_TARGET]
    assert "-DOEA_ROUTING_DEBUG_KNOBS=OFF" in cmake_commands(REPO / "plugin", tmp_path, "90", "nvcc")[0]
    # Scores must match torch bit for bit: no fast math anywhere in the kernel's build.
    assert "fast" not in (REPO / "plugin" / "CMakeLists.txt").read_text().replace("fast math", "")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
@pytest.mark.parametrize("body, found", [("", "< 3"), ("int oea_routing_api_version(void) { return 2; }", "2")])
def test_a_library_of_another_api_version_is_refused(tmp_path, body, found):
    src = tmp_path / "old.c"
    src.write_text(body + "\nint oea_validate_params(void) { return 0; }\n")
    lib = tmp_path / "liboea_routing.so"
    subprocess.run(["g++", "-x", "c", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    with pytest.raises(KernelUnavailable, match=rf"implements routing API version {re.escape(found)}, this package "
                                                rf"needs version 3: rebuild it"):
        KernelLibrary(lib)


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
