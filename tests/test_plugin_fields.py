"""The plugin's field table, seen from Python (runs everywhere: no TensorRT, no build).

plugin/tensorrt/oea_plugin_fields.h declares every field once (OEA_PLUGIN_FIELDS);
oea_trt.plugin mirrors it for Python callers. These tests keep the two identical and
check the OEAConfig <-> fields mapping the TensorRT-LLM layer relies on.
"""
import re
from pathlib import Path

import numpy as np
import pytest

from oea_trt import plugin as plugin_lib
from oea_trt.routing.config import FILL_MODES, ConfigError, OEAConfig

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugin" / "tensorrt"
_KIND = {"kInt32": ("int32", 1), "kBool": ("int32", 1), "kFloat32": ("float32", 1), "kSchedule": ("int32", None)}


def _cpp_field_table():
    text = (PLUGIN_DIR / "oea_plugin_fields.h").read_text()
    body = text[text.index("#define OEA_PLUGIN_FIELDS(X)"):]
    body = body[: body.index("\n\n")]
    rows = re.findall(r"X\((\w+),\s*(\w+),\s*[\w.]+,\s*(\w+),", body)
    assert rows, "OEA_PLUGIN_FIELDS not found in oea_plugin_fields.h"
    return [
        plugin_lib.FieldSpec(name, _KIND[kind][0], _KIND[kind][1], presence == "kRequired")
        for name, kind, presence in rows
    ]


def test_python_field_table_mirrors_the_cpp_table():
    assert list(plugin_lib.PLUGIN_FIELDS) == _cpp_field_table()


def test_every_oeaconfig_knob_is_a_plugin_field():
    knobs = set(OEAConfig.__dataclass_fields__)
    assert knobs <= {spec.name for spec in plugin_lib.PLUGIN_FIELDS}
    # The only field that is not a routing knob says where token kinds come from.
    assert {spec.name for spec in plugin_lib.PLUGIN_FIELDS} - knobs == {"token_kind_mode"}


def test_identity_and_env_names_match_the_cpp_sources():
    plugin_h = (PLUGIN_DIR / "oea_routing_plugin.h").read_text()
    override_h = (PLUGIN_DIR / "oea_k0_override.h").read_text()
    assert f'kPLUGIN_NAME = "{plugin_lib.PLUGIN_NAME}"' in plugin_h
    assert f'kPLUGIN_VERSION = "{plugin_lib.PLUGIN_VERSION}"' in plugin_h
    assert f'kPLUGIN_NAMESPACE = "{plugin_lib.PLUGIN_NAMESPACE}"' in plugin_h
    assert f'kK0_ENV = "{plugin_lib.K0_ENV}"' in override_h
    assert f'kK0_SCHEDULE_ENV = "{plugin_lib.K0_SCHEDULE_ENV}"' in override_h


def test_fields_of_a_default_config_resolve_derived_values():
    fields = plugin_lib.plugin_fields(OEAConfig(num_experts=128, top_k=8, k0=3))
    assert list(fields) == [s.name for s in plugin_lib.PLUGIN_FIELDS if s.name != "k0_schedule"]
    assert {n: a.dtype.name for n, a in fields.items()} == {
        s.name: s.dtype for s in plugin_lib.PLUGIN_FIELDS if s.name != "k0_schedule"
    }
    as_ints = {n: a.tolist() for n, a in fields.items() if n != "top_p"}
    assert as_ints == {
        "num_experts": [128], "top_k": [8], "k0": [3], "k_max": [8], "max_rank": [128],
        "renormalize": [1], "fill": [0], "piggyback_on_context": [1], "token_kind_mode": [0],
    }
    assert fields["top_p"].tolist() == [1.0]


def test_fields_carry_every_knob():
    config = OEAConfig(
        num_experts=64, top_k=4, k0=2, k_max=6, max_rank=20, top_p=0.9, renormalize=False,
        fill="top1", piggyback_on_context=False, k0_schedule=((16, 1), (4, 3)),
    )
    fields = plugin_lib.plugin_fields(config, plugin_lib.TOKEN_KIND_TRTLLM)
    assert fields["k_max"].tolist() == [6] and fields["max_rank"].tolist() == [20]
    assert fields["top_p"].dtype == np.float32 and fields["top_p"][0] == np.float32(0.9)
    assert fields["renormalize"].tolist() == [0] and fields["piggyback_on_context"].tolist() == [0]
    assert fields["fill"].tolist() == [FILL_MODES.index("top1")]
    assert fields["k0_schedule"].tolist() == [4, 3, 16, 1]  # sorted pairs, flattened
    assert fields["token_kind_mode"].tolist() == [2]


@pytest.mark.parametrize(
    "config",
    [
        OEAConfig(num_experts=128, top_k=8, k0=3),
        OEAConfig(num_experts=128, top_k=8, k0=8, k0_schedule=((8, 4), (16, 3))),
        OEAConfig(num_experts=60, top_k=4, k0=1, k_max=5, max_rank=7, top_p=0.5, renormalize=False,
                  fill="num_experts", piggyback_on_context=False),
    ],
)
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_config_round_trips_through_fields(config, mode):
    back, back_mode = plugin_lib.config_from_fields(plugin_lib.plugin_fields(config, mode))
    assert back_mode == mode
    # top_p travels as float32, the width the plugin stores.
    assert back == config.replace(top_p=float(np.float32(config.top_p)))


def test_config_from_fields_rejects_unknown_and_out_of_range_fields():
    fields = plugin_lib.plugin_fields(OEAConfig(num_experts=16, top_k=2, k0=1))
    with pytest.raises(KeyError, match="k_zero"):
        plugin_lib.config_from_fields({**fields, "k_zero": np.array([1], np.int32)})
    with pytest.raises(ConfigError, match="k0 must be"):
        plugin_lib.config_from_fields({**fields, "k0": np.array([0], np.int32)})


def test_num_inputs_per_mode_and_bad_mode():
    assert [plugin_lib.num_inputs(m) for m in (0, 1, 2)] == [1, 2, 3]
    with pytest.raises(ValueError, match="token_kind_mode must be"):
        plugin_lib.plugin_fields(OEAConfig(num_experts=16, top_k=2, k0=1), token_kind_mode=3)


def test_k0_override_env_uses_the_cli_schedule_format():
    assert plugin_lib.k0_override_env(k0=3) == {"OEA_TRT_K0": "3"}
    assert plugin_lib.k0_override_env(k0_schedule=((16, 3), (8, 4))) == {"OEA_TRT_K0_SCHEDULE": "16:3,8:4"}
    assert plugin_lib.k0_override_env(k0_schedule=()) == {"OEA_TRT_K0_SCHEDULE": "none"}
    assert plugin_lib.k0_override_env() == {}


class _FakeTrt:
    """Just the two constructors field_collection calls, to check what it hands TensorRT."""

    class PluginFieldType:
        INT32 = "INT32"
        FLOAT32 = "FLOAT32"

    @staticmethod
    def PluginField(name, data, kind):
        return (name, data, kind)

    class PluginFieldCollection(list):
        pass


def test_field_collection_types_follow_numpy_dtypes():
    fc = plugin_lib.field_collection(_FakeTrt, OEAConfig(num_experts=16, top_k=2, k0=1, k0_schedule=((2, 2),)))
    assert isinstance(fc, _FakeTrt.PluginFieldCollection) and fc.keep_alive == list(fc)
    kinds = {name: kind for name, _, kind in fc}
    assert kinds["top_p"] == "FLOAT32"
    assert {k for n, k in kinds.items() if n != "top_p"} == {"INT32"}
    assert dict((n, d.tolist()) for n, d, _ in fc)["k0_schedule"] == [2, 2]


def test_load_library_explains_a_missing_library(tmp_path, monkeypatch):
    class NoRegistry:
        @staticmethod
        def get_plugin_registry():
            class R:
                def get_creator(self, *a):
                    return None
            return R()

    monkeypatch.setenv(plugin_lib.LIBRARY_ENV, str(tmp_path / "nothing.so"))
    with pytest.raises(plugin_lib.PluginLibraryError, match="scripts/check_plugin.sh"):
        plugin_lib.load_library(NoRegistry)
