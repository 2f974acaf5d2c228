"""OEA inside TensorRT-LLM 1.2.1 itself. Real code; it runs only where TensorRT-LLM, the OEA
plugin library and a GPU are (NVIDIA's tensorrt-llm/release:1.2.1 container) and skips with the
reason elsewhere:
  - the OEA model class puts OEAMixtureOfExperts with the plan's per-layer k0 in every layer;
  - `oea-trt build` turns a tiny random Qwen3-MoE into an engine that generates through
    EngineRuntime, and with k0 = top_k it generates exactly what TensorRT-LLM's stock engine of
    the same checkpoint generates (our routing plugin is then vanilla top-k + renormalize);
  - the PyTorch backend instantiates our registered Qwen3MoeForCausalLM and generates with it.
"""
import json
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.trtllm, pytest.mark.gpu]

PROMPTS = ["hello world", "The quick brown fox", "abc", "1 + 2 = "]
TOP_K = 2


def _plugin_or_skip():
    from oea_trt import plugin as plugin_lib

    if plugin_lib.find_library() is None:
        pytest.skip(f"needs the OEA plugin library ({plugin_lib.LIBRARY_NAME}); build it with scripts/check_plugin.sh")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from oea_trt.data import VOCAB, save_hf_tokenizer

    d = tmp_path_factory.mktemp("tiny-qwen3-moe")
    torch.manual_seed(0)
    # Shapes the TensorRT-LLM kernels accept: head_dim 64, hidden and expert widths multiples of 128.
    cfg = Qwen3MoeConfig(vocab_size=len(VOCAB), hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                         num_experts=8, num_experts_per_tok=TOP_K, norm_topk_prob=True, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                         torch_dtype="bfloat16")
    Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(d))
    save_hf_tokenizer(str(d))
    return str(d)


def _build(tiny_dir, out, k0, layer_k0=None):
    from oea_trt.integrations.trtllm.build import build
    from oea_trt.integrations.trtllm.build_plan import BuildOptions

    build(BuildOptions(hf_dir=tiny_dir, output_dir=str(out), k0=k0, layer_k0=layer_k0, max_batch_size=8,
                       max_num_tokens=512, max_seq_len=256), progress=lambda line: None)
    return out


def test_model_class_routes_every_layer_with_oea(tiny_dir, tmp_path):
    _plugin_or_skip()
    from tensorrt_llm.models import QWenForCausalLM
    from tensorrt_llm.models.modeling_utils import PretrainedConfig

    from oea_trt.routing.config import OEAConfig
    from oea_trt.integrations.trtllm.build import patch_checkpoint_config
    from oea_trt.integrations.trtllm.layer import OEAMixtureOfExperts
    from oea_trt.integrations.trtllm.model import OEAQwenForCausalLM
    from oea_trt.plan.routing_plan import RoutingPlan

    ckpt = tmp_path / "ckpt"
    QWenForCausalLM.from_hugging_face(tiny_dir, "bfloat16").save_checkpoint(str(ckpt), save_config=True)
    plan = RoutingPlan(base=OEAConfig(num_experts=8, top_k=TOP_K, k0=1, fill="invalid"), moe_layers=(0, 1),
                       layer_k0={1: 2})
    patch_checkpoint_config(str(ckpt), plan, norm_topk_prob=True)
    config = PretrainedConfig.from_json_file(str(ckpt / "config.json"))
    model = OEAQwenForCausalLM.from_checkpoint(str(ckpt), config=config)
    layers = list(model.transformer.layers)
    assert [type(layer.mlp) for layer in layers] == [OEAMixtureOfExperts, OEAMixtureOfExperts]
    assert [layer.mlp.oea_config.k0 for layer in layers] == [1, 2]
    assert all(layer.mlp.oea_config.renormalize for layer in layers)
    assert json.loads((ckpt / "config.json").read_text())["moe"]["normalization_mode"] == 1


def test_build_generate_and_vanilla_equals_stock(tiny_dir, tmp_path):
    _plugin_or_skip()
    from oea_trt.runtime import SamplingOptions
    from oea_trt.runtime.engine import EngineRuntime

    opts = SamplingOptions(max_new_tokens=8)
    oea_engine = _build(tiny_dir, tmp_path / "oea", k0=1, layer_k0={1: 2})
    cfg = json.loads((oea_engine / "config.json").read_text())
    assert cfg["pretrained_config"]["oea"]["layer_k0"] == {"1": 2}
    assert (oea_engine / "oea_config.json").is_file()
    with EngineRuntime.open(str(oea_engine)) as rt:
        out = rt.generate(PROMPTS, opts)
    assert len(out) == len(PROMPTS) and all(len(g.token_ids) == 8 or g.finished for g in out)

    vanilla = _build(tiny_dir, tmp_path / "vanilla", k0=TOP_K)
    # TensorRT-LLM's own engine of the same (renormalize-patched) checkpoint: stock routing.
    stock = tmp_path / "stock"
    shutil.copytree(str(vanilla) + ".ckpt", tmp_path / "stock.ckpt")
    subprocess.run(["trtllm-build", "--checkpoint_dir", str(tmp_path / "stock.ckpt"), "--output_dir", str(stock),
                    "--max_batch_size", "8", "--max_num_tokens", "512", "--max_seq_len", "256",
                    "--gemm_plugin", "auto"], check=True)
    shutil.copy(vanilla / "oea_config.json", stock / "oea_config.json")  # tokenizer path + plan for the runtime
    with EngineRuntime.open(str(vanilla)) as rt:
        ours = [g.token_ids for g in rt.generate(PROMPTS, opts)]
    with EngineRuntime.open(str(stock)) as rt:
        theirs = [g.token_ids for g in rt.generate(PROMPTS, opts)]
    assert ours == theirs


def test_pytorch_backend_uses_the_registered_oea_model(tiny_dir, monkeypatch):
    pytest.importorskip("oea_trt.routing.dispatch", reason="needs the routing kernel's torch op (oea_trt.routing.dispatch)")
    from oea_trt.integrations.trtllm_torch.settings import ENV_VAR

    monkeypatch.setenv("TLLM_WORKER_USE_SINGLE_PROCESS", "1")  # the worker runs in this process
    monkeypatch.delenv(ENV_VAR, raising=False)  # restored (removed) after the test
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm._torch.models.modeling_utils import MODEL_CLASS_MAPPING

    from oea_trt.integrations.trtllm_torch import backend as torch_backend

    assert MODEL_CLASS_MAPPING["Qwen3MoeForCausalLM"] is torch_backend.OEAQwen3MoeForCausalLM
    torch_backend.configure(k0=1)
    llm = LLM(model=tiny_dir)
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=8))
    assert len(outs) == len(PROMPTS) and all(o.outputs[0].token_ids for o in outs)
