"""Tuned kernel configs as data (oea_trt/moe/tuned.py): file layout, the writer/reader round trip,
the nearest-batch lookup, the heuristic fallback, clear errors for bad files, and moe_forward's
config argument."""
import glob
import json
import os
from pathlib import Path

import pytest
import torch

from oea_trt.moe import tuned
from oea_trt.moe.triton.config import KernelConfig, default_config

GPU = "NVIDIA Test GPU 80GB"
SHAPE = (128, 2048, 768, 8)  # E, H, I, k of the 30B layer
CONFIGS = {1: KernelConfig(down="one_launch", gu_block_n=16, gu_block_k=256, programs_per_sm=2),
           16: KernelConfig(down="one_launch", gu_block_n=64, programs_per_sm=3),
           64: KernelConfig(block_m=64, down="slots", dn_block_n=128, dn_block_k=64, gu_stages=3)}


@pytest.fixture
def root(tmp_path):
    tuned.write_tuned(tuned.config_path(GPU, *SHAPE, torch.bfloat16, root=str(tmp_path)), CONFIGS)
    return str(tmp_path)


def test_layout_names_the_gpu_shape_and_dtype():
    assert tuned.device_dir_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert tuned.file_name(*SHAPE, torch.bfloat16) == "E128_H2048_I768_k8_bfloat16.json"
    assert tuned.config_path("NVIDIA H200", *SHAPE, "float16", root="/r") == (
        "/r/NVIDIA_H200/E128_H2048_I768_k8_float16.json")
    assert tuned.config_path("NVIDIA H200", *SHAPE, "float16").startswith(tuned.TUNED_DIR)


def test_writer_and_reader_round_trip(root):
    path = tuned.config_path(GPU, *SHAPE, torch.bfloat16, root=root)
    assert tuned.read_tuned(path) == CONFIGS
    assert list(json.load(open(path))) == ["1", "16", "64"]
    assert tuned.tuned_configs(GPU, *SHAPE, "bfloat16", root=root) == CONFIGS
    # A rewrite is seen at once (the per-process cache is dropped on write).
    tuned.write_tuned(path, {8: CONFIGS[64]})
    assert tuned.tuned_configs(GPU, *SHAPE, torch.bfloat16, root=root) == {8: CONFIGS[64]}


def test_install_merge_replaces_tuned_batches_and_keeps_the_others(root, tmp_path):
    """merge_tuned (what `bench tune --install` writes): the batches tuned in this run replace
    theirs, the file's other batches stay; no file or an unreadable one is simply written."""
    path = tuned.config_path(GPU, *SHAPE, torch.bfloat16, root=root)
    new = {16: CONFIGS[64], 32: CONFIGS[1]}
    assert tuned.merge_tuned(path, new) == (path, [1, 64])
    assert tuned.read_tuned(path) == {1: CONFIGS[1], 16: CONFIGS[64], 32: CONFIGS[1], 64: CONFIGS[64]}
    fresh = str(tmp_path / "new" / "f.json")
    assert tuned.merge_tuned(fresh, new) == (fresh, []) and tuned.read_tuned(fresh) == new
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert tuned.merge_tuned(str(broken), new) == (str(broken), []) and tuned.read_tuned(str(broken)) == new


@pytest.mark.parametrize("batch,tuned_batch", [(1, 1), (16, 16), (64, 64), (2, 1), (3, 1), (4, 16), (8, 16),
                                               (32, 64), (24, 16), (200, 64)])
def test_lookup_exact_or_nearest_batch_in_log_distance(root, batch, tuned_batch):
    """4 lies as far from 1 as from 16 (2 octaves), 32 from 16 and 64: a tie goes to the larger."""
    assert tuned.nearest_batch(CONFIGS, batch) == tuned_batch
    assert tuned.tuned_config(batch, *SHAPE, torch.bfloat16, GPU, root=root) == CONFIGS[tuned_batch]


def test_fallback_to_the_heuristic_for_another_gpu_shape_or_dtype(root):
    E, H, I, k = SHAPE
    want = default_config(16, H, I, k, E)
    assert tuned.tuned_config(16, *SHAPE, torch.bfloat16, "NVIDIA Other GPU", root=root) == want
    assert tuned.tuned_config(16, *SHAPE, torch.float16, GPU, root=root) == want
    assert tuned.tuned_config(16, E, 4096, 192, k, torch.bfloat16, GPU, root=root) == default_config(16, 4096, 192,
                                                                                                  k, E)
    assert tuned.tuned_configs("NVIDIA Other GPU", *SHAPE, torch.bfloat16, root=root) is None


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON"),
    ("[]", "must hold a non-empty object"),
    ("{}", "must hold a non-empty object"),
    ('{"sixteen": {}}', "key 'sixteen' is not a batch size"),
    ('{"0": {}}', "key '0' is not a batch size"),
    ('{"16": [32]}', "batch 16: expected an object of KernelConfig fields, got list"),
    ('{"16": {"dc_block_n": 16}}', r"batch 16: unknown KernelConfig field\(s\) \['dc_block_n'\]"),
    ('{"16": {"gu_block_n": 24}}', "batch 16: KernelConfig.gu_block_n must be a power of two >= 16, got 24"),
    ('{"16": {"down": "combine"}}', "batch 16: KernelConfig.down must be one of"),
])
def test_a_bad_file_is_a_clear_error(tmp_path, text, message):
    path = tuned.config_path(GPU, *SHAPE, torch.bfloat16, root=str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(tuned.TunedConfigError, match=message) as info:
        tuned.tuned_config(16, *SHAPE, torch.bfloat16, GPU, root=str(tmp_path))
    assert path in str(info.value)


def test_every_shipped_file_reads():
    """The package's tuned_configs/: one folder per GPU, files named by shape and dtype, each a
    valid {batch: KernelConfig} table (a broken file would break moe_forward on that GPU)."""
    assert os.path.isfile(os.path.join(tuned.TUNED_DIR, "README.md"))
    for path in glob.glob(os.path.join(tuned.TUNED_DIR, "*", "*.json")):
        name = os.path.basename(path)
        assert name.startswith("E") and "_H" in name and "_I" in name and "_k" in name, name
        assert all(batch >= 1 for batch in tuned.read_tuned(path)), path


def test_moe_forward_takes_an_explicit_config_for_our_kernel_only():
    """config reaches our kernel (pdl=True is refused off Hopper, by the kernel's entry); the
    other impls take none."""
    from oea_trt import OEAConfig, oea_route
    from oea_trt.moe import ExpertWeights, moe_forward
    from oea_trt.moe.shapes import MoEShape

    shape = MoEShape("tiny", num_experts=8, top_k=4, hidden_size=32, moe_intermediate_size=16, num_moe_layers=1)
    w = ExpertWeights.random(shape, seed=1)
    routing = oea_route(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), OEAConfig(8, 4, 2))
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="impl 'loop' takes no KernelConfig"):
        moe_forward(x, w, routing, impl="loop", config=KernelConfig())
    if not torch.cuda.is_available():
        pytest.importorskip("triton")
        with pytest.raises(ValueError, match="pdl=True needs a CUDA device"):
            moe_forward(x, w, routing, impl="triton", config=KernelConfig(pdl=True))


def test_the_shipped_tuned_files_read_and_cover_the_measured_batches():
    """Every file under oea_trt/moe/tuned_configs reads as KernelConfigs (fields validated), and the
    H100 30B file, tuned at B 1-64, is what a 30B layer call on that card runs with."""
    from oea_trt.moe.tuned import TUNED_DIR, read_tuned, tuned_config

    files = sorted(Path(TUNED_DIR).glob("*/*.json"))
    assert files, f"no tuned-config files under {TUNED_DIR}"
    for path in files:
        assert read_tuned(str(path)), path
    h100 = read_tuned(str(Path(TUNED_DIR) / "NVIDIA_H100_80GB_HBM3" / "E128_H2048_I768_k8_bfloat16.json"))
    assert sorted(h100) == [1, 2, 4, 8, 16, 32, 64]
    assert tuned_config(16, 128, 2048, 768, 8, "bfloat16", "NVIDIA H100 80GB HBM3") == h100[16]
