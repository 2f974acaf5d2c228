"""RoutingPlan: shared OEAConfig + per-layer k0, its CLI/JSON forms and its round trip."""
import json

import pytest

from oea_trt.routing.config import ConfigError, OEAConfig
from oea_trt.plan.routing_plan import RoutingPlan, format_layer_ranges, parse_layer_k0

BASE = OEAConfig(num_experts=128, top_k=8, k0=3, fill="invalid", k0_schedule=((8, 4), (16, 3)))


def test_parse_ranges_later_entries_win():
    got = parse_layer_k0("0-3:8, 2:5 ,10-11:4", range(48))
    assert got == {0: 8, 1: 8, 2: 5, 3: 8, 10: 4, 11: 4}


def test_parse_json_file(tmp_path):
    path = tmp_path / "k0.json"
    path.write_text(json.dumps({"0": 8, "47": 2}))
    assert parse_layer_k0(str(path), range(48)) == {0: 8, 47: 2}


@pytest.mark.parametrize("text,match", [
    ("0-3", "LAYERS:K0"),
    ("a:3", "layer in 'a:3' must be an integer"),
    ("5-2:3", "FIRST-LAST"),
    ("0-3:x", "k0 in '0-3:x' must be an integer"),
    ("40-50:3", "48-50 that are not MoE layers"),
    ("", "empty"),
])
def test_parse_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_layer_k0(text, range(48))


def test_config_for_layer_and_round_trip():
    plan = RoutingPlan(base=BASE, moe_layers=tuple(range(48)), layer_k0={0: 8, 5: 2})
    assert plan.config_for_layer(0).k0 == 8 and plan.config_for_layer(5).k0 == 2
    assert plan.config_for_layer(1) == BASE
    assert plan.config_for_layer(0).k0_schedule == BASE.k0_schedule  # shared knobs stay shared
    again = RoutingPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.k0_by_layer()[5] == 2


def test_invalid_per_layer_k0_names_the_layer():
    with pytest.raises(ConfigError, match=r"layer 7: k0 must be an integer in \[1, k_max=8\], got 9"):
        RoutingPlan(base=BASE, moe_layers=tuple(range(48)), layer_k0={7: 9})
    with pytest.raises(ConfigError, match="not MoE layers"):
        RoutingPlan(base=BASE, moe_layers=(1, 3), layer_k0={2: 4})


def test_k0_override_at_load_replaces_per_layer_values():
    plan = RoutingPlan(base=BASE, moe_layers=tuple(range(4)), layer_k0={0: 8})
    over = plan.with_k0(k0=5)
    assert over.k0_by_layer() == {0: 5, 1: 5, 2: 5, 3: 5}
    assert plan.with_k0(k0_schedule=()).base.k0_schedule is None
    assert plan.with_k0(layer_k0={1: 2}).k0_by_layer() == {0: 3, 1: 2, 2: 3, 3: 3}


def test_vanilla_detection():
    vanilla = RoutingPlan(base=OEAConfig.vanilla(128, 8), moe_layers=(0, 1))
    assert vanilla.is_vanilla()
    assert not RoutingPlan(base=OEAConfig.vanilla(128, 8), moe_layers=(0, 1), layer_k0={1: 4}).is_vanilla()


def test_layer_ranges_format():
    assert format_layer_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_layer_ranges([]) == "none"


def test_built_layers_are_checked_against_the_plan():
    """The engine model routes what TensorRT-LLM built: a MoE the plan knows gets its config, a
    dense MLP the plan calls dense gets none, and any disagreement is an error, not vanilla."""
    plan = RoutingPlan(base=BASE, moe_layers=(1, 3), layer_k0={3: 5})
    assert plan.config_for_built_layer(3, built_moe=True).k0 == 5
    assert plan.config_for_built_layer(0, built_moe=False) is None
    with pytest.raises(ConfigError, match="layer 0: the model has a MoE there but the routing plan has it dense"):
        plan.config_for_built_layer(0, built_moe=True)
    with pytest.raises(ConfigError, match="layer 1: the model has a dense MLP there but the routing plan has it a MoE"):
        plan.config_for_built_layer(1, built_moe=False)
