"""scripts/train_embedded.py runs (tiny model, a few CPU steps) and writes what the eval loads."""
import csv
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_training_run_produces_a_loadable_model(tmp_path):
    out = tmp_path / "train"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "train_embedded.py"), "--out", str(out), "--tiny",
           "--steps", "4", "--batch", "4", "--seq-len", "32", "--warmup", "2", "--workers", "1", "--eval-every", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 4 and summary["corpus_seed"] == 1234
    with open(out / "training_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["eval_loss"] and rows[3]["eval_loss"] and not rows[0]["eval_loss"]
    assert all(float(r["train_loss"]) > 0 for r in rows)
    for name in ("loss_curve.png", "expert_usage.png", "model/config.json", "model/model.safetensors",
                 "model/tokenizer.json"):
        assert (out / name).is_file(), name

    from oea_trt.eval import eval_sequences, load_model
    from oea_trt.integrations.hf import moe_layers

    model, tokenizer = load_model(str(out / "model"))
    assert model.config.model_type == "qwen3_moe"
    assert [(l.num_experts, l.top_k, l.norm_topk_prob) for l in moe_layers(model)] == [(16, 4, True)] * 2
    ids, _ = eval_sequences(tokenizer, count=2, length=16)
    assert int(ids[0, 0]) == tokenizer.bos_token_id == 1
