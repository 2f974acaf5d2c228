"""`oea-trt generate` on the embedded model, on the CPU (the transformers path): prints every
row's text, the timing line and the routing line, and writes its JSON."""
import json

import pytest

pytest.importorskip("transformers", reason="oea-trt generate loads the model with transformers")

from oea_trt.cli import main  # noqa: E402


def test_generate_prints_text_and_speed(capsys, tmp_path):
    out = tmp_path / "gen.json"
    rc = main(["generate", "--prompt", "12 + 30 = ", "--prompt", "The river", "--batch", "3", "--k0", "3",
               "--max-new-tokens", "6", "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "3 rows, OEA k0 3" in printed
    assert printed.count("--- [") == 3 and "--- [2] '12 + 30 = '" in printed
    assert "TPOT" in printed and "tokens/s (B=3)" in printed and "distinct experts per MoE layer" in printed
    report = json.loads(out.read_text())
    assert report["prompts"] == ["12 + 30 = ", "The river", "12 + 30 = "]
    assert report["outputs"][0] == report["outputs"][2]  # greedy: same prompt, same text
    assert report["timing"]["decode_steps"] == 5 and report["timing"]["tpot_ms"] > 0


def test_generate_refuses_contradictory_routing(capsys):
    assert main(["generate", "--vanilla", "--k0", "3", "--device", "cpu"]) == 2
    assert "--vanilla routes plain top-k" in capsys.readouterr().err
