"""oea_trt.integrations.hf on CUDA (GPU box): same routing as on the CPU, bf16 models, decode-sim vs a loop."""
import copy

import pytest
import torch

pytest.importorskip("transformers")

from oea_trt.integrations.hf import apply_oea  # noqa: E402
from oea_trt.models.random_model import tiny_qwen3_moe  # noqa: E402

pytestmark = pytest.mark.gpu


def _ids(batch, length, seed=0):
    return torch.randint(4, 100, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models():
    cpu = tiny_qwen3_moe(num_experts=16, top_k=4, num_layers=2)
    return cpu, copy.deepcopy(cpu).cuda()


def test_oea_off_matches_unpatched_on_cuda(models):
    _, gpu = models
    ids = _ids(6, 12).cuda()
    with torch.no_grad():
        ref = gpu(ids).logits
        with apply_oea(gpu, 4):
            ours = gpu(ids).logits
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_cuda_routes_like_the_cpu(models):
    cpu, gpu = models
    ids = _ids(8, 10, seed=1)
    mask = torch.ones_like(ids)
    mask[2, :4] = 0
    with torch.no_grad():
        with apply_oea(cpu, 2, decode_batch=4) as h:
            a = cpu(ids, attention_mask=mask).logits
            sa = h.stats()
        with apply_oea(gpu, 2, decode_batch=4) as h:
            b = gpu(ids.cuda(), attention_mask=mask.cuda()).logits.cpu()
            sb = h.stats()
    real = mask.bool()
    torch.testing.assert_close(b[real], a[real], rtol=1e-4, atol=1e-4)
    for i in sa:
        assert sb[i]["batches"] == sa[i]["batches"] and sb[i]["tokens"] == sa[i]["tokens"]
        assert sb[i]["mean_active_experts"] == pytest.approx(sa[i]["mean_active_experts"])


def test_decode_sim_equals_decode_loop_on_cuda(models):
    from transformers import DynamicCache

    _, gpu = models
    B, L = 4, 6
    ids = _ids(B, L, seed=2).cuda()
    with torch.no_grad():
        with apply_oea(gpu, 1):
            sim = gpu(ids).logits
        with apply_oea(gpu, 1, mode="generate"):
            cache = DynamicCache(config=gpu.config)
            steps = torch.cat([gpu(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits
                               for t in range(L)], 1)
    torch.testing.assert_close(sim, steps, rtol=1e-4, atol=1e-4)


def test_bf16_model_on_cuda(models):
    cpu, _ = models
    model = copy.deepcopy(cpu).to("cuda", torch.bfloat16)
    ids = _ids(16, 8, seed=3).cuda()
    with torch.no_grad():
        with apply_oea(model, None) as h:
            ref = model(ids).logits
            vanilla = h.stats()
        with apply_oea(model, 1) as h:
            out = model(ids).logits
            oea = h.stats()
    assert torch.isfinite(out.float()).all() and not torch.equal(out, ref)
    for i in vanilla:
        assert oea[i]["mean_active_experts"] < vanilla[i]["mean_active_experts"]
