"""Every bad knob or input gives a clear error naming the field, the allowed range and the value."""
import pytest
import torch

from oea_trt.routing.config import ConfigError, OEAConfig, format_k0_schedule, parse_k0_schedule
from oea_trt.routing.reference import RoutingInputError, oea_route, vanilla_route

GOOD = dict(num_experts=128, top_k=8, k0=3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_experts=0), "num_experts must be an integer in [1, 4096], got 0"),
        (dict(num_experts=8.0), "num_experts must be an integer in [1, 4096], got 8.0"),
        (dict(top_k=0), "top_k must be an integer in [1, num_experts=128], got 0"),
        (dict(top_k=129), "top_k must be an integer in [1, num_experts=128], got 129"),
        (dict(k0=0), "k0 must be an integer in [1, k_max=8], got 0"),
        (dict(k0=9), "k0 must be an integer in [1, k_max=8], got 9"),
        (dict(k0=True), "k0 must be an integer in [1, k_max=8], got True"),
        (dict(k_max=7), "k_max must be an integer in [top_k=8, num_experts=128], got 7"),
        (dict(k_max=200), "k_max must be an integer in [top_k=8, num_experts=128], got 200"),
        (dict(max_rank=0), "max_rank must be an integer in [1, num_experts=128], got 0"),
        (dict(max_rank=129), "max_rank must be an integer in [1, num_experts=128], got 129"),
        (dict(top_p=0.0), "top_p must be a number in (0, 1], got 0.0"),
        (dict(top_p=1.5), "top_p must be a number in (0, 1], got 1.5"),
        (dict(top_p=float("nan")), "top_p must be a number in (0, 1], got nan"),
        (dict(renormalize="yes"), "renormalize must be true or false, got 'yes'"),
        (dict(fill="zero"), "fill must be one of invalid, num_experts, top1, got 'zero'"),
        (dict(piggyback_on_context=1), "piggyback_on_context must be true or false, got 1"),
        (dict(k0_schedule=[]), "k0_schedule must be a non-empty list"),
        (dict(k0_schedule=[(4, 9)]), "k0_schedule k0 must be an integer in [1, k_max=8], got 9"),
        (dict(k0_schedule=[(-1, 3)]), "k0_schedule min_decode_tokens must be an integer >= 0, got -1"),
        (dict(k0_schedule=[(4, 3), (4, 2)]), "k0_schedule must be pairs with distinct min_decode_tokens"),
        (dict(k0_schedule=[(4, 3, 1)]), "k0_schedule entry must be a pair of integers"),
        (dict(k0_schedule=5), "k0_schedule must be a list of (min_decode_tokens, k0) pairs, got 5"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(changes, message):
    with pytest.raises(ConfigError) as err:
        OEAConfig(**{**GOOD, **changes})
    assert message in str(err.value)


def test_defaults_and_round_trip():
    cfg = OEAConfig(**GOOD, k0_schedule=[(16, 3), (0, 8)])
    assert (cfg.k_max, cfg.max_rank, cfg.top_p, cfg.renormalize, cfg.fill) == (8, 128, 1.0, True, "invalid")
    assert cfg.k0_schedule == ((0, 8), (16, 3))
    assert OEAConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.fill_code == 0 and cfg.replace(fill="top1").fill_code == 2
    assert OEAConfig.vanilla(128, 8).is_vanilla() and not cfg.is_vanilla()
    with pytest.raises(ConfigError, match="unknown OEA config field"):
        OEAConfig.from_dict({**GOOD, "k00": 1})


def test_schedule_text_form():
    assert parse_k0_schedule("8:4, 16:3") == ((8, 4), (16, 3))
    assert format_k0_schedule(((8, 4), (16, 3))) == "8:4,16:3"
    for bad in ("8", "a:b", ""):
        with pytest.raises(ConfigError, match="k0_schedule"):
            parse_k0_schedule(bad)


@pytest.mark.parametrize(
    "logits, kinds, message",
    [
        (torch.zeros(4), None, "router_logits must be 2-D [tokens, num_experts], got shape (4,)"),
        (torch.zeros(4, 64), None, "router_logits has 64 experts in dim 1, config.num_experts=128"),
        (torch.zeros(4, 128, dtype=torch.float64), None, "dtype must be float32, float16 or bfloat16"),
        (torch.zeros(4, 128), torch.zeros(3, dtype=torch.int32), "token_kind must have shape [4]"),
        (torch.zeros(4, 128), torch.zeros(4), "token_kind must be an integer tensor"),
        ([[0.0]], None, "router_logits must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_are_rejected(logits, kinds, message):
    with pytest.raises(RoutingInputError) as err:
        oea_route(logits, OEAConfig(**GOOD), kinds)
    assert message in str(err.value)


def test_vanilla_route_rejects_bad_inputs_too():
    with pytest.raises(RoutingInputError, match="2-D"):
        vanilla_route(torch.zeros(3), 2)
    with pytest.raises(ConfigError, match="top_k"):
        vanilla_route(torch.zeros(3, 4), 5)
