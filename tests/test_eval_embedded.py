"""The embedded Qwen3-MoE LM shipped in oea_trt/models/embedded (skipped until its weights are in)."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers")

from oea_trt.eval import EMBEDDED_MODEL_DIR, eval_sequences, evaluate, load_model  # noqa: E402
from oea_trt.integrations.hf import apply_oea, moe_layers  # noqa: E402

WEIGHTS = os.path.join(EMBEDDED_MODEL_DIR, "model.safetensors")
pytestmark = pytest.mark.skipif(not os.path.isfile(WEIGHTS),
                                reason="embedded weights not trained yet (scripts/gpu/train.sh)")


@pytest.fixture(scope="module")
def embedded():
    return load_model()


def test_shape_and_size_are_what_we_ship():
    assert os.path.getsize(WEIGHTS) <= 21 * 10 ** 6
    with open(os.path.join(EMBEDDED_MODEL_DIR, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "qwen3_moe"
    assert config["num_experts"] == 128 and config["num_experts_per_tok"] == 8 and config["norm_topk_prob"]
    for name in ("TRAINING.md", "loss_curve.png", "training_log.csv", "tokenizer.json"):
        assert os.path.isfile(os.path.join(EMBEDDED_MODEL_DIR, name)), name


def test_loads_and_predicts_its_corpus(embedded):
    model, tokenizer = embedded
    layers = moe_layers(model)
    assert [(l.num_experts, l.top_k, l.norm_topk_prob) for l in layers] == [(128, 8, True)] * len(layers)
    ids, _ = eval_sequences(tokenizer, count=14, length=64)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
        with apply_oea(model, 8):
            patched = model(input_ids=ids).logits
    assert float(out.loss) < 1.5  # a uniform guess over 100 characters is 4.6 nats
    assert torch.equal(patched, out.logits)


def test_oea_costs_less_quality_than_pruning(embedded):
    model, tokenizer = embedded
    ids, _ = eval_sequences(tokenizer, count=16, length=48)
    rows = evaluate(model, ids, batches=(16,), k0s=(2, 4))
    oea = {r.k0: r for r in rows if r.routing == "oea"}
    prune = {r.k0: r for r in rows if r.routing == "prune"}
    for k0 in (2, 4):
        assert prune[k0].delta_ce > 0  # dropping experts hurts a trained model
        assert oea[k0].delta_ce < prune[k0].delta_ce
        assert oea[k0].active_experts < 0.8 * oea[k0].vanilla_active_experts
