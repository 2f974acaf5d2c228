"""The plugin's build-time answers and host-side logic, driven without TensorRT or a GPU.

tests/plugin_harness.py dlopens liboea_routing_trt.so, takes the creator from its getCreators
export and calls the plugin's IPluginV3OneBuild methods as TensorRT's builder would (with a
minimal IExprBuilder for getOutputShapes). Needs only the built plugin (TensorRT headers at
build time); skips without it.
"""
import numpy as np
import pytest

from oea_trt import plugin as plugin_lib
from oea_trt.routing.config import OEAConfig
from plugin_harness import (  # noqa: F401  (plugin_build is a fixture)
    DT_BF16, DT_FLOAT, DT_HALF, DT_INT32, DT_INT64, FORMAT_CHW2, FORMAT_LINEAR, PluginHarness,
    leading_context_rows, plugin_build,
)

CONFIG = OEAConfig(num_experts=128, top_k=8, k0=3, k_max=10)


@pytest.fixture(scope="module")
def harness(plugin_build):  # noqa: F811
    return PluginHarness(plugin_build)


def test_get_creators_exports_the_oea_routing_creator(harness):
    assert harness.creator_info() == "OeaRouting 1 oea_trt"


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_outputs_are_int32_ids_and_float_weights_for_every_logits_type(harness, mode):
    plugin = harness.create(CONFIG, mode)
    assert plugin.nb_outputs() == 2
    assert plugin.info() == "OeaRouting 1 oea_trt"
    extra = [DT_INT32] * mode
    for logits_type in (DT_FLOAT, DT_HALF, DT_BF16):
        assert plugin.output_types([logits_type] + extra) == (0, [DT_INT32, DT_FLOAT])
    assert plugin.output_types([DT_INT32] + extra)[0] != 0  # logits must be floating point
    assert plugin.output_types([DT_FLOAT] * (1 if mode else 2))[0] != 0  # wrong number of inputs


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_format_combinations_are_linear_with_fixed_types(harness, mode):
    plugin = harness.create(CONFIG, mode)
    n = mode + 1
    for logits_type in (DT_FLOAT, DT_HALF, DT_BF16):
        types = [logits_type] + [DT_INT32] * mode + [DT_INT32, DT_FLOAT]
        assert all(plugin.supports(pos, types) for pos in range(n + 2))
    good = [DT_FLOAT] + [DT_INT32] * mode + [DT_INT32, DT_FLOAT]
    assert not plugin.supports(0, [DT_INT32] + good[1:])
    assert not plugin.supports(n, good[:n] + [DT_INT64, DT_FLOAT])       # ids only kINT32
    assert not plugin.supports(n + 1, good[:n] + [DT_INT32, DT_HALF])    # weights only kFLOAT
    assert not plugin.supports(0, good, [FORMAT_CHW2] + [FORMAT_LINEAR] * (n + 1))
    if mode:
        assert not plugin.supports(1, good[:1] + [DT_INT64] + good[2:])  # token kinds int32


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_output_shapes_are_tokens_by_k_max(harness, mode):
    plugin = harness.create(CONFIG, mode)
    ranks = [2] + [1] * mode
    status, shapes = plugin.output_shapes(ranks, experts=128)
    assert status == 0
    # Both outputs: 2-D, dim 0 IS router_logits' token expression (-2), dim 1 the constant k_max.
    assert shapes == [[2, -2, 10], [2, -2, 10]]
    assert plugin.output_shapes(ranks, experts=-1)[0] == 0  # symbolic E is checked at configure time
    assert plugin.output_shapes(ranks, experts=64)[0] != 0  # E disagrees with num_experts
    assert plugin.output_shapes([3] + [1] * mode, experts=128)[0] != 0


def test_workspace_comes_from_the_largest_profile_and_grows_with_it(harness):
    plugin = harness.create(CONFIG, 0)
    sizes = [plugin.workspace(DT_FLOAT, t) for t in (1, 64, 4096, 65536)]
    assert all(s >= 0 for s in sizes) and sizes == sorted(sizes), sizes


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_reload_and_clone_keep_every_field(harness, mode):
    config = OEAConfig(num_experts=60, top_k=4, k0=2, k_max=6, max_rank=30, top_p=0.75, renormalize=False,
                       fill="top1", piggyback_on_context=False, k0_schedule=((4, 3), (16, 1)))
    plugin = harness.create(config, mode)
    expected = plugin_lib.plugin_fields(config, mode)
    for copy in (plugin, plugin.reload(), plugin.clone(), plugin.reload().reload()):
        got = copy.serialized()
        assert list(got) == list(expected)
        assert all(got[n].dtype == expected[n].dtype and got[n].tolist() == expected[n].tolist() for n in got)


def test_bad_fields_are_refused_through_get_creators_too(harness):
    fields = plugin_lib.plugin_fields(CONFIG)
    assert harness.create_raw({**fields, "k0": np.array([11], np.int32)}) is None  # k0 > k_max = 10
    assert harness.create_raw({**fields, "top_p": np.array([2.0], np.float32)}) is None
    assert harness.create_raw(fields) is not None


# TensorRT-LLM packed batches: context requests first (types 0, their lengths), then one
# row per generation sequence (type 1). Anything else is "unknown" (-1 -> plain top-k).
@pytest.mark.parametrize("types, lengths, tokens, expected", [
    ([], [], 0, 0),
    ([1, 1, 1], [0, 0, 0], 3, 0),                  # generation only
    ([0], [17], 17, 17),                           # one prompt
    ([0, 0, 1, 1], [5, 3, 0, 0], 10, 8),           # 8 context rows, then 2 decode rows
    ([0, 1], [4, 99], 5, 4),                       # a generation entry's context length is ignored
    ([0, 0, 1], [5, 3, 0], 11, -1),                # rows do not add up (speculative decoding)
    ([1, 0], [0, 4], 5, -1),                       # context after generation: not packed
    ([0, 2], [4, 0], 5, -1),                       # unknown request type
    ([0, 1], [-1, 0], 0, -1),                      # negative context length
    ([1, 1], [0, 0], 4, -1),                       # padded rows
])
def test_host_split_of_a_trtllm_packed_batch(plugin_build, types, lengths, tokens, expected):  # noqa: F811
    assert leading_context_rows(plugin_build, types, lengths, tokens) == expected


def test_k0_override_changes_what_an_engine_load_creates(harness, monkeypatch):
    config = OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((16, 3),))
    built = harness.create(config)  # build phase: the engine stores these values
    monkeypatch.setenv(plugin_lib.K0_ENV, "4")
    monkeypatch.setenv(plugin_lib.K0_SCHEDULE_ENV, "32:2, 8:5")
    assert harness.create(config).serialized()["k0"].tolist() == [8]  # build phase ignores the variables
    loaded = built.reload().serialized()
    assert loaded["k0"].tolist() == [4] and loaded["k0_schedule"].tolist() == [8, 5, 32, 2]
    assert {n: a.tolist() for n, a in loaded.items() if n not in ("k0", "k0_schedule")} == {
        n: a.tolist() for n, a in plugin_lib.plugin_fields(config).items() if n not in ("k0", "k0_schedule")}

    monkeypatch.setenv(plugin_lib.K0_SCHEDULE_ENV, "none")
    monkeypatch.setenv(plugin_lib.K0_ENV, " ")  # blank = unset: the engine's k0 stays
    loaded = built.reload().serialized()
    assert loaded["k0"].tolist() == [8] and "k0_schedule" not in loaded

    monkeypatch.setenv(plugin_lib.K0_ENV, "9")  # above the engine's k_max = 8: the load fails
    assert built.reload() is None


def test_k0_override_set_in_process_wins_over_the_environment(harness, monkeypatch):
    """oea_trt.plugin.set_k0_override (the library's oeaSetK0Override): what EngineRuntime uses
    instead of changing its own environment. It replaces the variables while set."""
    config = OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((16, 3),))
    built = harness.create(config)
    monkeypatch.setenv(plugin_lib.K0_ENV, "5")
    monkeypatch.delenv(plugin_lib.K0_SCHEDULE_ENV, raising=False)
    path = harness.library_path
    try:
        plugin_lib.set_k0_override(k0=4, k0_schedule=((32, 2), (8, 5)), path=path)
        loaded = built.reload().serialized()
        assert loaded["k0"].tolist() == [4] and loaded["k0_schedule"].tolist() == [8, 5, 32, 2]
        assert harness.create(config).serialized()["k0"].tolist() == [8]  # build phase: never overridden

        plugin_lib.set_k0_override(k0_schedule=(), path=path)  # only the schedule, removed; k0 stays the engine's
        loaded = built.reload().serialized()
        assert loaded["k0"].tolist() == [8] and "k0_schedule" not in loaded

        plugin_lib.set_k0_override(k0=9, path=path)  # above the engine's k_max = 8: the load fails
        assert built.reload() is None
    finally:
        plugin_lib.set_k0_override(path=path)  # cleared: the environment applies again
    assert built.reload().serialized()["k0"].tolist() == [5]


def test_k0_override_that_does_not_parse_is_refused_when_set(harness):
    import ctypes

    set_override = ctypes.CDLL(str(harness.library_path)).oeaSetK0Override
    set_override.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    error = ctypes.create_string_buffer(256)
    assert set_override(b"three", None, error, len(error)) == -1
    assert error.value.decode() == "k0 (oeaSetK0Override) must be an integer k0, got 'three'"
    assert set_override(None, b"8:4,16", error, len(error)) == -1
    assert "k0_schedule (oeaSetK0Override) must be MIN_DECODE_TOKENS:K0 pairs" in error.value.decode()
    assert set_override(None, None, error, len(error)) == 0 and error.value == b""
