"""OeaRouting inside TensorRT's real plugin registry (the lean runtime; CPU, no GPU needed).

Needs `pip install tensorrt-lean-cu13-libs==10.16.1.11 tensorrt-lean-cu13-bindings==10.16.1.11`
and the built plugin (tests/plugin_harness.py: TensorRT_INCLUDE_DIR or OEA_TRT_PLUGIN_LIB);
skips with the reason otherwise. Load through IPluginRegistry.load_library (getCreators), find
the creator, create plugins from field collections and reject what OEAConfig rejects.

TensorRT's Python bindings cannot call getFieldsToSerialize or clone on a C++ plugin (their
docstring says so), so the serialized-field round trip and the values after a k0 override
are checked through the C++ harness on the same library (tests/test_plugin_harness_cpu.py).
"""
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from oea_trt import plugin as plugin_lib
from oea_trt.routing.config import ConfigError, OEAConfig

trt = pytest.importorskip(
    "tensorrt_lean_bindings",
    reason="needs TensorRT's lean runtime: pip install tensorrt-lean-cu13-libs==10.16.1.11 "
    "tensorrt-lean-cu13-bindings==10.16.1.11",
)
from plugin_harness import plugin_build  # noqa: E402,F401  (session fixture)

I32, F32 = np.int32, np.float32


@pytest.fixture(scope="module")
def creator(plugin_build):  # noqa: F811
    return plugin_lib.load_library(trt, plugin_build / plugin_lib.LIBRARY_NAME)


def _create(creator, fields, phase=trt.TensorRTPhase.BUILD):
    return creator.create_plugin("oea_test", plugin_lib.collection_from_arrays(trt, fields), phase)


def test_creator_is_registered_under_the_documented_identity(creator):
    assert isinstance(creator, trt.IPluginCreatorV3One)
    assert (creator.name, creator.plugin_version, creator.plugin_namespace) == (
        plugin_lib.PLUGIN_NAME, plugin_lib.PLUGIN_VERSION, plugin_lib.PLUGIN_NAMESPACE)
    # load_library is idempotent: a second call finds the creator instead of loading again.
    assert plugin_lib.load_library(trt) is not None


def test_creator_field_names_are_the_field_table(creator):
    types = {"int32": trt.PluginFieldType.INT32, "float32": trt.PluginFieldType.FLOAT32}
    reported = [(f.name, f.type) for f in creator.field_names]
    assert reported == [(s.name, types[s.dtype]) for s in plugin_lib.PLUGIN_FIELDS]


CONFIGS = [
    OEAConfig(num_experts=128, top_k=8, k0=3),
    OEAConfig.vanilla(128, 8),
    OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((8, 4), (16, 3))),
    OEAConfig(num_experts=60, top_k=4, k0=2, k_max=6, max_rank=30, top_p=0.8, renormalize=False,
              fill="top1", piggyback_on_context=False),
    OEAConfig(num_experts=1, top_k=1, k0=1, fill="num_experts"),
    OEAConfig(num_experts=4096, top_k=16, k0=1, k0_schedule=tuple((m, 1 + m % 16) for m in range(16))),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"E{c.num_experts}-k{c.top_k}-k0{c.k0}")
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("phase", [trt.TensorRTPhase.BUILD, trt.TensorRTPhase.RUNTIME])
def test_valid_configs_create_plugins(creator, config, mode, phase):
    plugin = creator.create_plugin("oea_test", plugin_lib.field_collection(trt, config, mode), phase)
    assert plugin is not None
    core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
    assert (core.plugin_name, core.plugin_version, core.plugin_namespace) == ("OeaRouting", "1", "oea_trt")
    assert plugin.get_capability_interface(trt.PluginCapabilityType.BUILD).num_outputs == 2


def test_absent_optional_fields_take_defaults(creator):
    plugin = _create(creator, {"num_experts": np.array([64], I32), "top_k": np.array([4], I32),
                               "k0": np.array([2], I32)})
    assert plugin is not None


def _base():
    return plugin_lib.plugin_fields(OEAConfig(num_experts=32, top_k=4, k0=2))


# Each bad value, and the words the refusal must contain (the kernel API's
# oea_validate_params or the plugin's own structural checks).
BAD_FIELDS = {
    "k0 = 0": (dict(k0=np.array([0], I32)), "k0 must be in [1, k_max]"),
    "k0 > k_max": (dict(k0=np.array([5], I32)), "k0 must be in [1, k_max]"),
    "top_k > num_experts": (dict(top_k=np.array([33], I32)), "top_k must be in [1, num_experts]"),
    "k_max < top_k": (dict(k_max=np.array([3], I32)), "k_max must be in [top_k, num_experts]"),
    "k_max > num_experts": (dict(k_max=np.array([33], I32)), "k_max must be in [top_k, num_experts]"),
    "max_rank = 0": (dict(max_rank=np.array([0], I32)), "max_rank must be in [1, num_experts]"),
    "num_experts = 0": (dict(num_experts=np.array([0], I32)), "num_experts must be in [1, 4096]"),
    "num_experts = 4097": (dict(num_experts=np.array([4097], I32)), "num_experts must be in [1, 4096]"),
    "top_p = 0": (dict(top_p=np.array([0.0], F32)), "top_p must be in (0, 1]"),
    "top_p > 1": (dict(top_p=np.array([1.5], F32)), "top_p must be in (0, 1]"),
    "top_p NaN": (dict(top_p=np.array([np.nan], F32)), "top_p must be in (0, 1]"),
    "fill = 3": (dict(fill=np.array([3], I32)), "fill must be 0 (invalid), 1 (num_experts) or 2 (top1)"),
    "renormalize = 2": (dict(renormalize=np.array([2], I32)), "renormalize must be 0 or 1"),
    "piggyback_on_context = -1": (dict(piggyback_on_context=np.array([-1], I32)),
                                  "piggyback_on_context must be 0 or 1"),
    "schedule odd length": (dict(k0_schedule=np.array([8, 4, 16], I32)), "'k0_schedule' must be kINT32 pairs"),
    "schedule k0 > k_max": (dict(k0_schedule=np.array([8, 5], I32)), "schedule_k0 entries must be in [1, k_max]"),
    "schedule k0 = 0": (dict(k0_schedule=np.array([8, 0], I32)), "schedule_k0 entries must be in [1, k_max]"),
    "schedule min < 0": (dict(k0_schedule=np.array([-1, 2], I32)), "schedule_min_decode entries must be >= 0"),
    "schedule duplicate min": (dict(k0_schedule=np.array([8, 2, 8, 3], I32)), "distinct min_decode_tokens"),
    "schedule 17 pairs": (dict(k0_schedule=np.array([v for m in range(17) for v in (m, 1)], I32)),
                          "0..16 pairs"),
    "token_kind_mode = 3": (dict(token_kind_mode=np.array([3], I32)), "'token_kind_mode' must be 0"),
    "k0 as float32": (dict(k0=np.array([2.0], F32)), "'k0' must be kINT32 with 1 value, got kFLOAT32"),
    "k0 as int64": (dict(k0=np.array([2], np.int64)), "'k0' must be kINT32 with 1 value, got kINT64"),
    "top_p as float64": (dict(top_p=np.array([0.5], np.float64)), "'top_p' must be kFLOAT32 with 1 value"),
    "k0 with two values": (dict(k0=np.array([2, 3], I32)), "'k0' must be kINT32 with 1 value, got kINT32 with 2"),
    "unknown field": (dict(k_zero=np.array([1], I32)), "unknown field 'k_zero'; known fields: num_experts"),
}


@pytest.mark.parametrize("name", list(BAD_FIELDS))
def test_invalid_fields_are_refused_with_a_message_naming_the_field(creator, name, capfd):
    bad, message = BAD_FIELDS[name]
    fields = {**_base(), **bad}
    assert _create(creator, fields) is None
    assert _create(creator, fields, trt.TensorRTPhase.RUNTIME) is None
    err = capfd.readouterr().err
    assert "OeaRouting createPlugin('oea_test')" in err and message in err, err


def test_missing_required_field_is_refused(creator, capfd):
    fields = _base()
    del fields["k0"]
    assert _create(creator, fields) is None
    assert "'k0' is required" in capfd.readouterr().err


def _random_fields(rng):
    """Each knob valid most of the time, else just past one of OEAConfig's boundaries."""
    def pick(valid, invalid):
        return rng.choice(invalid) if rng.random() < 0.08 else valid

    E = pick(rng.choice([1, 2, 8, 60, 128, 4096]), [0, 4097, -3])
    top_k = pick(rng.randint(1, max(1, min(E, 16))), [0, E + 1])
    k_max = pick(rng.choice([None, top_k, min(top_k + 2, E)]), [top_k - 1, E + 1])
    kk = top_k if k_max is None else k_max
    fields = {
        "num_experts": E, "top_k": top_k, "k_max": k_max,
        "k0": pick(rng.randint(1, max(1, kk)), [0, kk + 1, -1]),
        "max_rank": pick(rng.choice([None, 1, E]), [0, E + 1]),
        "top_p": pick(rng.choice([None, 1.0, 0.5, 1e-9]), [0.0, 1.0000001, -0.5, float("nan")]),
        "renormalize": pick(rng.choice([None, 0, 1]), [2, -1]),
        "fill": pick(rng.choice([None, 0, 1, 2]), [3, -1]),
        "piggyback_on_context": pick(rng.choice([None, 0, 1]), [5]),
        "k0_schedule": pick(rng.choice([None, [], [0, 1], [4, max(1, kk)], [16, 1, 4, 2]]),
                            [[4, kk + 1], [4, 1, 4, 2], [-2, 1], [3]]),
    }
    return {n: np.array(v, F32 if n == "top_p" else I32).reshape(-1) for n, v in fields.items()
            if v is not None and not (n == "k0_schedule" and not v)}


def test_plugin_accepts_exactly_what_oeaconfig_accepts(creator, capfd):
    rng = random.Random(20251104)
    outcomes = {True: 0, False: 0}
    for _ in range(600):
        fields = _random_fields(rng)
        try:
            plugin_lib.config_from_fields(fields)
            python_ok = True
        except ConfigError:
            python_ok = False
        plugin_ok = _create(creator, fields) is not None
        assert plugin_ok == python_ok, {n: a.tolist() for n, a in fields.items()}
        outcomes[python_ok] += 1
    capfd.readouterr()
    assert min(outcomes.values()) > 150, outcomes  # the sample really covers both sides


@pytest.fixture
def k0_env(monkeypatch):
    def set_env(k0=None, schedule=None):
        for name, value in ((plugin_lib.K0_ENV, k0), (plugin_lib.K0_SCHEDULE_ENV, schedule)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    set_env()
    return set_env


def test_k0_override_is_announced_at_engine_load_only(creator, k0_env, capfd):
    fields = plugin_lib.plugin_fields(OEAConfig(num_experts=128, top_k=8, k0=7, k0_schedule=((16, 3),)))
    k0_env(k0="4", schedule="8:5,32:2")
    assert _create(creator, fields, trt.TensorRTPhase.BUILD) is not None
    assert "overridden" not in capfd.readouterr().err
    assert _create(creator, fields, trt.TensorRTPhase.RUNTIME) is not None
    err = capfd.readouterr().err
    assert "OEA_TRT_K0: k0 7 -> 4; OEA_TRT_K0_SCHEDULE: k0_schedule 16:3 -> 8:5,32:2" in err, err


@pytest.mark.parametrize("k0, schedule, message", [
    ("9", None, "k0"),                      # above the engine's k_max = 8
    ("0", None, "k0"),
    ("three", None, "OEA_TRT_K0 must be an integer"),
    (None, "8:4,16", "OEA_TRT_K0_SCHEDULE must be"),
    (None, "8:9", "k0"),
    (None, "8:4,8:3", "distinct"),
])
def test_invalid_k0_override_fails_the_load_with_the_variable_named(creator, k0_env, capfd, k0, schedule, message):
    fields = plugin_lib.plugin_fields(OEAConfig(num_experts=128, top_k=8, k0=3))
    k0_env(k0=k0, schedule=schedule)
    assert _create(creator, fields, trt.TensorRTPhase.RUNTIME) is None
    assert _create(creator, fields, trt.TensorRTPhase.BUILD) is not None  # build phase ignores it
    err = capfd.readouterr().err
    assert message in err and ("OEA_TRT_K0" in err), err


def _run_python(code, env):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def _lean_library():
    import tensorrt_lean_libs
    return os.path.join(os.path.dirname(tensorrt_lean_libs.__file__), "libnvinfer_lean.so.10")


PRELOADED_PROCESS = """
    import numpy as np
    import tensorrt_lean_bindings as trt
    from oea_trt import plugin as plugin_lib
    from oea_trt.routing.config import OEAConfig
    registry = trt.get_plugin_registry()
    creator = plugin_lib.get_creator(trt)
    print("registered", creator is not None)
    if creator is not None:
        plugin = creator.create_plugin("p", plugin_lib.field_collection(trt, OEAConfig(num_experts=8, top_k=2, k0=1)),
                                       trt.TensorRTPhase.BUILD)
        print("created", plugin is not None)
        # plugin_lib never loads the second library when the creator is already there ...
        print("same creator", plugin_lib.load_library(trt, "{library}") is not None)
        # ... and the registry itself refuses a second registration of the same creator.
        print("second load", bool(registry.load_library("{library}")))
"""


def test_preload_library_registers_itself_when_libnvinfer_is_preloaded_first(plugin_build):  # noqa: F811
    preload = plugin_build / plugin_lib.PRELOAD_LIBRARY_NAME
    code = PRELOADED_PROCESS.format(library=plugin_build / plugin_lib.LIBRARY_NAME)
    rc, out, err = _run_python(code, {"LD_PRELOAD": f"{_lean_library()} {preload}"})
    assert rc == 0, err
    assert out.split("\n")[:3] == ["registered True", "created True", "same creator True"], out + err
    assert "second load False" in out, out + err


def test_preload_library_alone_opens_libnvinfer_itself(plugin_build):  # noqa: F811
    # What Triton gets: only our library is preloaded; it dlopens libnvinfer by name (here the
    # lean runtime's, named by OEA_TRT_NVINFER_LIBRARY) and the bindings then reuse that copy.
    code = PRELOADED_PROCESS.format(library=plugin_build / plugin_lib.LIBRARY_NAME)
    rc, out, err = _run_python(code, {"LD_PRELOAD": str(plugin_build / plugin_lib.PRELOAD_LIBRARY_NAME),
                                      "OEA_TRT_NVINFER_LIBRARY": _lean_library()})
    assert rc == 0, err
    assert out.split("\n")[:3] == ["registered True", "created True", "same creator True"], out + err


def test_preload_library_without_any_libnvinfer_says_so(plugin_build):  # noqa: F811
    rc, out, err = _run_python(PRELOADED_PROCESS.format(library="unused"),
                               {"LD_PRELOAD": str(plugin_build / plugin_lib.PRELOAD_LIBRARY_NAME),
                                "OEA_TRT_NVINFER_LIBRARY": "libnvinfer_absent.so.10"})
    assert rc == 0, err
    assert "registered False" in out
    assert "found no libnvinfer (dlopen(libnvinfer_absent.so.10)" in err and "NOT registered" in err, err
