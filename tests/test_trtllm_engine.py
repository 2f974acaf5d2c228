"""OEA inside TensorRT-LLM 1.2.1 itself. Real code; it runs only where TensorRT-LLM, the OEA
plugin library and a GPU are (NVIDIA's tensorrt-llm/release:1.2.1 container) and skips with the
reason elsewhere:
  - the OEA model class puts OEAMixtureOfExperts with the plan's per-layer k0 in every layer;
  - `oea-trt build` turns a tiny random Qwen3-MoE into an engine that generates through
    EngineRuntime; with k0 = top_k it generates exactly what stock TensorRT-LLM generates:
    checkpoint converted by TensorRT-LLM's own converter and built by plain trtllm-build, on a
    model where stock routing is right (norm_topk_prob=false); for norm_topk_prob=true stock
    TensorRT-LLM writes normalization NONE (wrong for Qwen3), and ours equals TensorRT-LLM's
    routing with only that mode corrected;
  - engines through the LLM API (MPI-spawned workers) load the plugin via the launcher;
  - the PyTorch backend builds the registered OEA model in its (spawned) worker with the
    settings from llm_kwargs, and refuses to build without them.
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


def _tiny_model(directory, norm_topk_prob):
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from oea_trt.data import VOCAB, save_hf_tokenizer

    torch.manual_seed(0)
    # Shapes the TensorRT-LLM kernels accept: head_dim 64, hidden and expert widths multiples of 128.
    cfg = Qwen3MoeConfig(vocab_size=len(VOCAB), hidden_size=256, intermediate_size=512, moe_intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                         num_experts=8, num_experts_per_tok=TOP_K, norm_topk_prob=norm_topk_prob,
                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False, torch_dtype="bfloat16")
    Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(directory))
    save_hf_tokenizer(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny-qwen3-moe"), norm_topk_prob=True)


@pytest.fixture(scope="module")
def tiny_dir_no_renorm(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny-qwen3-moe-plain"), norm_topk_prob=False)


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


def _stock_engine(hf_dir, out, normalization_mode=None):
    """What stock TensorRT-LLM makes of hf_dir: its own converter, plain trtllm-build. With
    normalization_mode, that one field of the converted checkpoint is set first."""
    from tensorrt_llm.models import QWenForCausalLM

    ckpt = out.parent / (out.name + ".ckpt")
    QWenForCausalLM.from_hugging_face(hf_dir, "bfloat16").save_checkpoint(str(ckpt), save_config=True)
    written = json.loads((ckpt / "config.json").read_text())["moe"]["normalization_mode"]
    if normalization_mode is not None:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["moe"]["normalization_mode"] = normalization_mode
        (ckpt / "config.json").write_text(json.dumps(cfg))
    subprocess.run(["trtllm-build", "--checkpoint_dir", str(ckpt), "--output_dir", str(out),
                    "--max_batch_size", "8", "--max_num_tokens", "512", "--max_seq_len", "256",
                    "--gemm_plugin", "auto"], check=True)
    return out, written


def _generate(engine, opts, oea_engine=None):
    from oea_trt.runtime.engine import EngineRuntime

    if oea_engine is not None:  # the runtime reads the tokenizer path and plan from oea_config.json
        shutil.copy(oea_engine / "oea_config.json", engine / "oea_config.json")
    with EngineRuntime.open(str(engine)) as rt:
        return [g.token_ids for g in rt.generate(PROMPTS, opts)]


def test_build_and_generate_with_per_layer_k0(tiny_dir, tmp_path):
    _plugin_or_skip()
    from oea_trt.runtime import SamplingOptions

    oea_engine = _build(tiny_dir, tmp_path / "oea", k0=1, layer_k0={1: 2})
    cfg = json.loads((oea_engine / "config.json").read_text())
    assert cfg["pretrained_config"]["oea"]["layer_k0"] == {"1": 2}
    assert (oea_engine / "oea_config.json").is_file()
    out = _generate(oea_engine, SamplingOptions(max_new_tokens=8))
    assert len(out) == len(PROMPTS) and all(len(ids) == 8 for ids in out)


def test_vanilla_equals_stock_tensorrt_llm(tiny_dir_no_renorm, tmp_path):
    """norm_topk_prob=false: stock TensorRT-LLM's hard-coded normalization NONE is right there."""
    _plugin_or_skip()
    from oea_trt.runtime import SamplingOptions

    opts = SamplingOptions(max_new_tokens=8)
    vanilla = _build(tiny_dir_no_renorm, tmp_path / "vanilla", k0=TOP_K)
    stock, written = _stock_engine(tiny_dir_no_renorm, tmp_path / "stock")
    assert written == 0
    assert _generate(vanilla, opts) == _generate(stock, opts, oea_engine=vanilla)


def test_stock_tensorrt_llm_routes_qwen3_without_renormalization(tiny_dir, tmp_path):
    """norm_topk_prob=true: TensorRT-LLM's converter writes NONE (this test notices when it stops
    doing so); ours renormalizes like Hugging Face and equals TensorRT-LLM's own RENORMALIZE routing."""
    _plugin_or_skip()
    from oea_trt.runtime import SamplingOptions

    opts = SamplingOptions(max_new_tokens=8)
    vanilla = _build(tiny_dir, tmp_path / "vanilla", k0=TOP_K)
    stock, written = _stock_engine(tiny_dir, tmp_path / "stock", normalization_mode=1)
    assert written == 0, "TensorRT-LLM now writes the normalization itself: drop the builder's patch"
    assert _generate(vanilla, opts) == _generate(stock, opts, oea_engine=vanilla)


LLM_API_ON_ENGINE = """
import sys
from tensorrt_llm import SamplingParams
from tensorrt_llm._tensorrt_engine import LLM
from oea_trt.integrations.trtllm.launch import require_preloaded
require_preloaded(sys.argv[1])
llm = LLM(model=sys.argv[1], tokenizer=sys.argv[2])
outs = llm.generate(["hello world", "abc"], SamplingParams(max_tokens=4))
print("generated", sum(len(o.outputs[0].token_ids) for o in outs))
"""


def test_engine_through_the_llm_api_loads_the_plugin_in_its_workers(tiny_dir, tmp_path):
    _plugin_or_skip()
    import sys

    from oea_trt.integrations.trtllm.launch import MODULE

    engine = _build(tiny_dir, tmp_path / "oea", k0=1)
    script = tmp_path / "llm_api.py"
    script.write_text(LLM_API_ON_ENGINE)
    plain = subprocess.run([sys.executable, str(script), str(engine), tiny_dir], capture_output=True, text=True)
    assert plain.returncode != 0 and f"python -m {MODULE}" in plain.stderr
    launched = subprocess.run([sys.executable, "-m", MODULE, str(engine), "--", sys.executable, str(script),
                               str(engine), tiny_dir], capture_output=True, text=True, timeout=900)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "generated 8" in launched.stdout


def test_pytorch_backend_builds_the_oea_model_in_its_spawned_worker(tiny_dir, monkeypatch):
    """No TLLM_WORKER_USE_SINGLE_PROCESS: the executor runs in an MPI-spawned worker. The settings
    reach it in llm_args.model_kwargs: a per-layer k0 out of range fails there, and without
    settings the worker refuses to build the model."""
    pytest.importorskip("oea_trt.routing.dispatch", reason="needs the routing kernel's torch op (oea_trt.routing.dispatch)")
    monkeypatch.delenv("TLLM_WORKER_USE_SINGLE_PROCESS", raising=False)
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm._torch.models.modeling_utils import MODEL_CLASS_MAPPING

    from oea_trt.integrations.trtllm_torch import backend

    assert MODEL_CLASS_MAPPING["Qwen3MoeForCausalLM"] is backend.OEAQwen3MoeForCausalLM
    llm = LLM(model=tiny_dir, **backend.llm_kwargs(k0=1))
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=8))
    assert len(outs) == len(PROMPTS) and all(o.outputs[0].token_ids for o in outs)
    llm.shutdown()
    with pytest.raises(Exception, match=r"k0 must be an integer in \[1, k_max=2\], got 9"):
        LLM(model=tiny_dir, **backend.llm_kwargs(k0=1, layer_k0={1: 9}))
    with pytest.raises(Exception, match="without OEA settings"):
        LLM(model=tiny_dir)
