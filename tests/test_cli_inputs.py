"""oea_trt.inputs, the checks every front end shares: strict numbers, JSON files that name
themselves, safetensors completeness, model / engine / tokenizer directories, devices, memory,
and output paths written all-or-nothing."""
import json
import os
from pathlib import Path

import pytest
import torch

from oea_trt.inputs import (InputError, StagedOutputs, check_device, check_engine_dir, check_fits, check_float,
                            check_int, check_model_dir, check_output_dir, check_output_file, check_tokenizer_dir,
                            parse_float, parse_int, read_json, safetensors_shapes)
from oea_trt.plan.hf_config import qwen3_moe_spec

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "oea_trt" / "models" / "embedded"
Q30 = ROOT / "tests" / "data" / "qwen3-30b-a3b"


# ---- numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [True, False, 5.9, 3.0, "3", None, [3]])
def test_check_int_refuses_everything_but_int(value):
    with pytest.raises(InputError, match=r"k0 must be a positive integer, got .*\(" + type(value).__name__):
        check_int(value, "k0", lo=1)


def test_check_int_bounds_name_the_range():
    assert check_int(3, "k0", lo=1, hi=8) == 3
    with pytest.raises(InputError, match=r"k0 must be an integer in \[1, 8\], got 9"):
        check_int(9, "k0", lo=1, hi=8)
    with pytest.raises(InputError, match="layer must be an integer >= 0, got -1"):
        check_int(-1, "layer", lo=0)


@pytest.mark.parametrize("text", ["3.0", "1e3", "", " ", "0x10", "+", "\u0663", "3 4", "true"])
def test_parse_int_refuses_what_int_would_stretch(text):
    with pytest.raises(InputError, match="--batch must be"):
        parse_int(text, "--batch")


def test_parse_int_and_float_accept_plain_numbers():
    assert parse_int(" +7 ", "x") == 7 and parse_int("-3", "x") == -3
    assert parse_float("1e-3", "x", lo=0.0, lo_open=True) == pytest.approx(1e-3)
    for bad in ("nan", "inf", "-inf", "x"):
        with pytest.raises(InputError):
            parse_float(bad, "--bandwidth")
    with pytest.raises(InputError, match=r"must be in \(0, 1\], got 0$"):
        check_float(0.0, "--top-p", lo=0.0, hi=1.0, lo_open=True)
    with pytest.raises(InputError, match="finite number"):
        check_float(True, "--top-p")


# ---- JSON files ------------------------------------------------------------------------------

def test_read_json_names_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert read_json(str(good), "--x") == {"a": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n}')
    with pytest.raises(InputError, match=r"--x .*bad\.json is not valid JSON \(.* at line 3, column 1\)"):
        read_json(str(bad), "--x")
    with pytest.raises(InputError, match=r"good\.json must hold a list \[\.\.\.\], got dict"):
        read_json(str(good), "--x", list)
    with pytest.raises(InputError, match="is a directory"):
        read_json(str(tmp_path), "--x")
    with pytest.raises(InputError, match="does not exist"):
        read_json(str(tmp_path / "nope.json"), "--x")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not a text file|not valid JSON"):
        read_json(str(binary), "--x")


# ---- safetensors -------------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 5), "b.weight": torch.zeros(7, dtype=torch.bfloat16)}
    path = tmp_path / "w.safetensors"
    safetensors.save_file(tensors, str(path))
    return path, {k: list(v.shape) for k, v in tensors.items()}


def test_safetensors_shapes_of_a_complete_file(weights):
    path, shapes = weights
    assert safetensors_shapes(str(path)) == shapes


def test_safetensors_truncated_extended_and_foreign(weights, tmp_path):
    path, _ = weights
    size = path.stat().st_size
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(InputError, match=rf"is truncated \({size - 1} bytes, its header describes {size}\)"):
        safetensors_shapes(str(path))
    path.write_bytes(data + b"\0")
    with pytest.raises(InputError, match="longer than its header says"):
        safetensors_shapes(str(path))
    path.write_bytes(data[:5])
    with pytest.raises(InputError, match="truncated or not a safetensors file"):
        safetensors_shapes(str(path))
    path.write_bytes((12).to_bytes(8, "little") + b"not json at all")
    with pytest.raises(InputError, match="not a safetensors file"):
        safetensors_shapes(str(path))


# ---- model, engine and tokenizer directories ------------------------------------------------------

def test_check_model_dir_matches_the_plan_spec():
    assert check_model_dir(str(EMBEDDED), tokenizer=True) == qwen3_moe_spec(str(EMBEDDED))
    assert check_model_dir(str(Q30), weights=False) == qwen3_moe_spec(str(Q30))
    with pytest.raises(InputError, match="has config.json but no weights"):
        check_model_dir(str(Q30))


@pytest.mark.parametrize("field, value", [("vocab_size", "big"), ("max_position_embeddings", 512.0),
                                          ("head_dim", True), ("num_key_value_heads", 0)])
def test_optional_config_fields_are_typed(tmp_path, field, value):
    config = json.loads((Q30 / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=f"{field} must be a positive integer, got {value!r}"):
        check_model_dir(str(tmp_path), weights=False)


def test_sharded_weights_need_every_shard(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    config = json.loads((EMBEDDED / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    gate = [config["num_experts"], config["hidden_size"]]
    shards = {f"model-0000{i + 1}-of-00003.safetensors": {f"model.layers.{i}.mlp.gate.weight": torch.zeros(gate)}
              for i in range(3)}
    for name, tensors in shards.items():
        safetensors.save_file(tensors, str(tmp_path / name))
    index = {"weight_map": {k: name for name, tensors in shards.items() for k in tensors}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert check_model_dir(str(tmp_path)).num_experts == config["num_experts"]
    os.remove(tmp_path / "model-00002-of-00003.safetensors")
    with pytest.raises(InputError, match="lacks 1 weight file.*model-00002-of-00003.safetensors"):
        check_model_dir(str(tmp_path))


@pytest.fixture
def engine(tmp_path):
    d = tmp_path / "engine"
    d.mkdir()
    config = {"pretrained_config": {"architecture": "Qwen3MoeForCausalLM"}, "build_config": {"max_batch_size": 8}}
    (d / "config.json").write_text(json.dumps(config))
    (d / "rank0.engine").write_bytes(b"\0")
    return d, config


def test_check_engine_dir(engine):
    d, config = engine
    assert check_engine_dir(str(d)) == config
    with pytest.raises(InputError, match="is a Hugging Face model directory, not an engine; build one with"):
        check_engine_dir(str(EMBEDDED))
    for bad, match in (({**config, "build_config": [8]}, "build_config must be an object, got list"),
                       ({**config, "build_config": {"max_batch_size": 8.0}}, r"max_batch_size must be a positive"),
                       ({**config, "pretrained_config": {"mapping": {"world_size": "2"}}}, "mapping.world_size")):
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=match):
            check_engine_dir(str(d))
    (d / "config.json").write_text(json.dumps(config))
    (d / "oea_config.json").write_text('{"plugin": "liboea.so"}')
    with pytest.raises(InputError, match="oea_config.json: plugin must be an object, got str"):
        check_engine_dir(str(d))
    (d / "oea_config.json").write_text("{")
    with pytest.raises(InputError, match="oea_config.json is not valid JSON"):
        check_engine_dir(str(d))
    os.remove(d / "oea_config.json")
    os.remove(d / "rank0.engine")
    with pytest.raises(InputError, match=r"has no \*\.engine file"):
        check_engine_dir(str(d))


def test_check_tokenizer_dir(tmp_path):
    assert check_tokenizer_dir(str(EMBEDDED)) == str(EMBEDDED)
    with pytest.raises(InputError, match="--tokenizer-dir .* has no tokenizer"):
        check_tokenizer_dir(str(Q30), "--tokenizer-dir")
    (tmp_path / "tokenizer.json").write_text('{"truncated": ')
    with pytest.raises(InputError, match=r"tokenizer\.json is not valid JSON"):
        check_tokenizer_dir(str(tmp_path))


def test_check_device():
    assert check_device("cpu") == "cpu"
    assert check_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "cuda0", ""):
        with pytest.raises(InputError, match=r"must be auto, cpu or cuda\[:N\]"):
            check_device(bad)
    with pytest.raises(InputError, match="--device cuda:99"):
        check_device("cuda:99")


def test_check_fits_says_what_would():
    check_fits(100, "--batch 4", "use less", available=1000)
    with pytest.raises(InputError, match=r"--batch 9 needs about 2.0 GB of memory, 1.0 GB is available; "
                                         r"use --batch up to 4"):
        check_fits(2e9, "--batch 9", lambda free: f"use --batch up to {free // 250_000_000}", available=10**9)


# ---- output paths -----------------------------------------------------------------------------

def test_check_output_file(tmp_path):
    target = tmp_path / "out.json"
    assert check_output_file(str(target), "--json") == str(target)
    target.write_text("old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_output_file(str(target), "--json")
    assert check_output_file(str(target), "--json", overwrite=True)
    with pytest.raises(InputError, match="is a directory"):
        check_output_file(str(tmp_path), "--json")
    with pytest.raises(InputError, match="directory .*missing does not exist"):
        check_output_file(str(tmp_path / "missing" / "x.json"), "--json")
    with pytest.raises(InputError, match="directory .*out.json is a file"):
        check_output_file(str(target / "x.json"), "--json")


def test_check_output_dir(tmp_path):
    assert check_output_dir(str(tmp_path / "a" / "b"), "--output-dir") == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # checking creates nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_output_dir(str(tmp_path / "f"), "--output-dir")
    with pytest.raises(InputError, match="cannot be created: .*f is a file"):
        check_output_dir(str(tmp_path / "f" / "sub"), "--output-dir")
    (tmp_path / "r.json").write_text("x")
    with pytest.raises(InputError, match="already holds r.json; pass --overwrite to replace it"):
        check_output_dir(str(tmp_path), "--output-dir", ["r.json", "p.png"])
    assert check_output_dir(str(tmp_path), "--output-dir", ["r.json"], overwrite=True)


def test_staged_outputs_commit_together(tmp_path):
    final = tmp_path / "new" / "deeper" / "plot.png"
    with StagedOutputs() as out:
        tmp = out.path(str(final))
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(final.parent)  # same filesystem, same format
        Path(tmp).write_text("png")
        out.path(str(tmp_path / "skipped.txt"))  # never written: not created
        assert not final.exists()
    assert final.read_text() == "png" and out.written == [str(final)]
    assert sorted(os.listdir(final.parent)) == ["plot.png"] and not (tmp_path / "skipped.txt").exists()


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_staged_outputs_leave_nothing_on_failure(tmp_path, failure):
    keep = tmp_path / "keep.json"
    keep.write_text("before")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(type(failure)):
        with StagedOutputs(overwrite=True) as out:
            Path(out.path(str(keep))).write_text("after")
            Path(out.path(str(tmp_path / "made" / "x.txt"))).write_text("x")
            raise failure
    assert keep.read_text() == "before"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_staged_outputs_never_replace_without_overwrite(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(InputError, match="appeared while this command ran; nothing was written"):
        with StagedOutputs() as out:
            Path(out.path(str(tmp_path / "other.json"))).write_text("1")
            Path(out.path(str(target))).write_text("new")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's" and sorted(os.listdir(tmp_path)) == ["r.json"]
    with StagedOutputs(overwrite=True) as out:
        Path(out.path(str(target))).write_text("new")
    assert target.read_text() == "new"


def test_staged_directory_replaces_only_when_complete(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "old.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with StagedOutputs(overwrite=True) as out:
            (Path(out.directory(str(model))) / "half.bin").write_text("half")
            raise KeyboardInterrupt
    assert os.listdir(model) == ["old.bin"] and os.listdir(tmp_path) == ["model"]
    with StagedOutputs(overwrite=True) as out:
        (Path(out.directory(str(model))) / "new.bin").write_text("new")
    assert os.listdir(model) == ["new.bin"] and os.listdir(tmp_path) == ["model"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with StagedOutputs() as out:  # an empty directory may be filled without overwrite
        (Path(out.directory(str(empty))) / "a").write_text("a")
    assert os.listdir(empty) == ["a"]


@pytest.mark.gpu
def test_check_fits_on_the_gpu_reads_its_free_memory():
    from oea_trt.inputs import available_bytes

    free = available_bytes("cuda")
    assert 0 < free <= torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(InputError, match="of GPU memory"):
        check_fits(2 * free + 1, "--batch 1000000", "use a smaller --batch", device="cuda")
    check_fits(1024, "--batch 1", "", device="cuda")
