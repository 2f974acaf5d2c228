"""Random models of any shape (oea_trt.models.random_model): calibrated routers give the routing
they promise on the model's own hidden states, decoding random tokens as the benchmark does."""
import pytest
import torch

from oea_trt import OEAConfig
from oea_trt.decode import DecodeEngine, ModelShape, Sampler
from oea_trt.models.random_model import calibrated_routers, random_decode_model, random_qwen3_moe, set_routers
from oea_trt.routing.synthetic import expected_uniform_active

SHAPE = ModelShape(vocab_size=512, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64,
                   moe_intermediate_size=32, num_experts=128, top_k=8)


def _mean_active(model, k0, batch=16, seed=3):
    engine = DecodeEngine(model)
    engine.set_routing(OEAConfig(128, 8, k0))
    ids = torch.randint(SHAPE.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    result = engine.generate(ids, max_new_tokens=9, sampler=Sampler(temperature=1.0))
    return result.mean_active()  # per MoE layer, over 8 decode steps


@pytest.fixture(scope="module")
def model():
    return random_decode_model(SHAPE, dtype=torch.float32, seed=1, routers="uniform")


def test_uniform_routers_touch_what_independent_choices_touch(model):
    """~E(1 - (1 - k/E)^B) distinct experts at every depth (82.4 of 128 at B=16): what the
    tokens share was taken out of the routers."""
    want = expected_uniform_active(128, 8, 16)
    per_layer = _mean_active(model, 8)
    assert ((per_layer - want).abs() < 0.1 * want).all(), per_layer


def test_skewed_routers_touch_what_real_routers_touch(model):
    """SkewedRouter is calibrated to Qwen3-30B's 48.8 distinct experts at B=16 (49 +- 2 for
    its own logits); read from hidden states every layer stays near it, and OEA k0=3 about
    halves it, as the paper measured (25.1)."""
    uniform = [r.clone() for r in (model.weights.layers[i].router for i in SHAPE.moe_layers)]
    set_routers(model.weights, SHAPE, calibrated_routers(model, "skewed", seed=1))
    try:
        vanilla, oea = _mean_active(model, 8), _mean_active(model, 3)
    finally:
        set_routers(model.weights, SHAPE, uniform)
    assert ((vanilla > 40) & (vanilla < 60)).all(), vanilla
    assert ((oea > 0.35 * vanilla) & (oea < 0.65 * vanilla)).all(), (oea, vanilla)


def test_calibration_leaves_the_model_and_rejects_unknown_kinds(model):
    before = model.weights.layers[0].router.clone()
    calibrated_routers(model, "skewed", seed=1)
    assert torch.equal(model.weights.layers[0].router, before)
    with pytest.raises(ValueError, match="uniform, skewed"):
        calibrated_routers(model, "zipf")


def test_random_transformers_model_of_any_shape():
    pytest.importorskip("transformers")
    shape = ModelShape(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                       moe_intermediate_size=16, num_experts=8, top_k=2, intermediate_size=24, moe_layers=(1,))
    hf = random_qwen3_moe(shape, dtype=torch.float32, seed=4, routers="skewed")
    assert type(hf).__name__ == "Qwen3MoeForCausalLM" and hf.config.num_hidden_layers == 2
    out = hf(torch.randint(40, (2, 6), generator=torch.Generator().manual_seed(5))).logits
    assert out.shape == (2, 6, 40) and torch.isfinite(out).all() and out.std() > 0.1
