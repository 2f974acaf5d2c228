"""A real TensorRT engine with one OeaRouting layer, against the Python reference.

Needs the full TensorRT builder (`tensorrt`) and a GPU: runs in NVIDIA's TensorRT /
TensorRT-LLM containers, skipped elsewhere (conftest's `tensorrt` and `gpu` markers). The
plugin library comes from $OEA_TRT_PLUGIN_LIB or is built (tests/plugin_harness.py).
Builds a strongly typed network router_logits[, token_kind] -> add_plugin_v3 -> (expert_ids,
weights) with a dynamic token dimension, serializes the engine, deserializes it (the runtime
createPlugin path, where the k0 override applies) and runs it on several batch sizes.
"""
import pytest
import torch

from oea_trt import plugin as plugin_lib
from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import oea_route
from plugin_harness import plugin_build  # noqa: F401

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

MAX_TOKENS = 512


@pytest.fixture(scope="module")
def trt(plugin_build):  # noqa: F811
    import tensorrt

    plugin_lib.load_library(tensorrt, plugin_build / plugin_lib.LIBRARY_NAME)
    return tensorrt


def _build_engine(trt, config, token_kind_mode, logits_dtype):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    E = config.num_experts
    inputs = [network.add_input("router_logits", logits_dtype, (-1, E))]
    if token_kind_mode == plugin_lib.TOKEN_KIND_DEVICE:
        inputs.append(network.add_input("token_kind", trt.int32, (-1,)))
    creator = plugin_lib.get_creator(trt)
    plugin = creator.create_plugin("oea_routing", plugin_lib.field_collection(trt, config, token_kind_mode),
                                   trt.TensorRTPhase.BUILD)
    assert plugin is not None
    layer = network.add_plugin_v3(inputs, [], plugin)
    for index, name in enumerate(("expert_ids", "weights")):
        layer.get_output(index).name = name
        network.mark_output(layer.get_output(index))
    profile = builder.create_optimization_profile()
    profile.set_shape("router_logits", (1, E), (64, E), (MAX_TOKENS, E))
    if token_kind_mode == plugin_lib.TOKEN_KIND_DEVICE:
        profile.set_shape("token_kind", (1,), (64,), (MAX_TOKENS,))
    build_config = builder.create_builder_config()
    build_config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, build_config)
    assert serialized is not None, "engine build failed (see the TensorRT log)"
    return logger, bytes(serialized)


def _run_engine(trt, logger, serialized, logits, token_kind=None, k_max=8):
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    assert engine is not None, "deserialization failed: is OeaRouting registered / the k0 override valid?"
    assert engine.get_tensor_dtype("expert_ids") == trt.int32
    assert engine.get_tensor_dtype("weights") == trt.float32
    context = engine.create_execution_context()
    T = logits.shape[0]
    ids = torch.empty(T, k_max, dtype=torch.int32, device="cuda")
    weights = torch.empty(T, k_max, dtype=torch.float32, device="cuda")
    context.set_input_shape("router_logits", tuple(logits.shape))
    context.set_tensor_address("router_logits", logits.data_ptr())
    if token_kind is not None:
        context.set_input_shape("token_kind", tuple(token_kind.shape))
        context.set_tensor_address("token_kind", token_kind.data_ptr())
    assert tuple(context.get_tensor_shape("expert_ids")) == (T, k_max)
    context.set_tensor_address("expert_ids", ids.data_ptr())
    context.set_tensor_address("weights", weights.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return ids, weights


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("token_kind_mode", [plugin_lib.TOKEN_KIND_NONE, plugin_lib.TOKEN_KIND_DEVICE])
def test_one_layer_engine_matches_the_reference(trt, dtype, token_kind_mode):
    config = OEAConfig(num_experts=128, top_k=8, k0=3, k0_schedule=((32, 2),))
    torch_dtype = getattr(torch, dtype)
    logger, serialized = _build_engine(trt, config, token_kind_mode, getattr(trt, dtype))
    for T in (1, 16, 100, MAX_TOKENS):
        logits = (3 * torch.randn(T, 128, generator=torch.Generator().manual_seed(T))).to(torch_dtype).cuda()
        token_kind = None
        if token_kind_mode == plugin_lib.TOKEN_KIND_DEVICE:
            token_kind = torch.tensor([CONTEXT, DECODE, DECODE, 2] * T, dtype=torch.int32, device="cuda")[:T]
        ids, weights = _run_engine(trt, logger, serialized, logits, token_kind)
        ref = oea_route(logits, config, token_kind)
        assert torch.equal(ids, ref.expert_ids)
        torch.testing.assert_close(weights, ref.weights, rtol=1e-5, atol=1e-7)


def test_k0_override_applies_when_the_engine_is_loaded(trt, monkeypatch):
    config = OEAConfig(num_experts=128, top_k=8, k0=8)
    logger, serialized = _build_engine(trt, config, plugin_lib.TOKEN_KIND_NONE, trt.float16)
    logits = (3 * torch.randn(64, 128, generator=torch.Generator().manual_seed(1))).half().cuda()
    for name, value in plugin_lib.k0_override_env(k0=3).items():
        monkeypatch.setenv(name, value)
    ids, _ = _run_engine(trt, logger, serialized, logits)
    assert torch.equal(ids, oea_route(logits, config.replace(k0=3)).expert_ids)
    monkeypatch.setenv(plugin_lib.K0_ENV, "9")  # above k_max = 8: loading must fail
    assert trt.Runtime(logger).deserialize_cuda_engine(serialized) is None


def test_k0_override_set_in_process_applies_when_the_engine_is_loaded(trt, plugin_build, monkeypatch):  # noqa: F811
    """What EngineRuntime.open does: set_k0_override on the library TensorRT loaded, no environment."""
    monkeypatch.delenv(plugin_lib.K0_ENV, raising=False)
    monkeypatch.delenv(plugin_lib.K0_SCHEDULE_ENV, raising=False)
    config = OEAConfig(num_experts=128, top_k=8, k0=8)
    logger, serialized = _build_engine(trt, config, plugin_lib.TOKEN_KIND_NONE, trt.float16)
    logits = (3 * torch.randn(64, 128, generator=torch.Generator().manual_seed(2))).half().cuda()
    path = plugin_build / plugin_lib.LIBRARY_NAME
    try:
        plugin_lib.set_k0_override(k0=3, k0_schedule=((32, 2),), path=path)
        ids, _ = _run_engine(trt, logger, serialized, logits)
        assert torch.equal(ids, oea_route(logits, config.replace(k0=3, k0_schedule=((32, 2),))).expert_ids)
    finally:
        plugin_lib.set_k0_override(path=path)
    ids, _ = _run_engine(trt, logger, serialized, logits)
    assert torch.equal(ids, oea_route(logits, config).expert_ids)
