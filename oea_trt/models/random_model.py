"""Random Qwen3-MoE models of any shape, no download: for tests, examples and benchmarks.

    tiny_qwen3_moe(...)                        a small transformers model (transformers' own init)
    save_tiny_model(dir, ...)                  the same, saved with the character tokenizer
    random_decode_weights(shape, device=...)   ModelWeights built layer by layer on the device
    random_decode_model(shape, routers=...)    a DecodeModel on them ("uniform" or "skewed" routers)
    calibrated_routers(model, kind)            routers of either kind for a model (set_routers installs them)
    random_qwen3_moe(shape, ...)               a transformers model whose tensors ARE such weights

Routers. With i.i.d. random router weights every expert is equally likely and a batch of
decode tokens touches ~E(1 - (1 - k/E)^B) experts (82 of 128 at B=16); real routers are skewed
(Qwen3-30B: 48.8 at B=16). "skewed" routers reproduce oea_trt.routing.synthetic.SkewedRouter
(logits = c (0.5 popularity + topic of the token) + unit noise) from the hidden states
themselves: every token embedding carries a shared direction u0 and one of SKEWED_TOPICS
topic directions u1..un (topic = token id mod n), orthonormal in hidden space, and layer
outputs are scaled small so the residual stream keeps them. Layer l's router is then
    W_l = c (0.5 p_l u0^T / kappa0_l + sum_j topic_lj u_j^T / kappa_l) + N_l / sigma_l
with p_l, topic_lj the SkewedRouter(E, seed=l) draws, N_l random rows orthogonal to every u and
to the layer's mean hidden state, and kappa0_l, kappa_l, sigma_l measured by one calibration
prefill (the mean projection of the layer's normed hidden state on u0 and on its token's topic
direction, the spread of N_l h), so W_l h has the generator's structure at every depth.
"uniform" routers are N_l / sigma_l alone.
The distinct experts a run really touched are measured, never assumed.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch

from oea_trt.data.tokenizer import VOCAB, save_hf_tokenizer
from oea_trt.decode.model import DecodeModel
from oea_trt.decode.shape import ModelShape
from oea_trt.decode.weights import LayerWeights, ModelWeights, to_hf
from oea_trt.integrations.hf.portable import add_v4_config_keys
from oea_trt.moe import ExpertWeights
from oea_trt.routing.synthetic import SKEWED_TOPICS, SkewedRouter

ROUTER_KINDS = ("uniform", "skewed")
#: Shares of an embedding's squared norm: shared direction u0, its topic direction, noise.
EMBED_SHARES = (0.25, 0.25, 0.5)
#: RMS of each attention / expert block's output relative to the residual (small, so the
#: embedding's directions survive every layer and routers can read them).
ATTENTION_SCALE, EXPERT_SCALE = 0.3, 0.5


def tiny_qwen3_moe(num_experts: int = 16, top_k: int = 4, num_layers: int = 2, hidden_size: int = 32,
                   moe_intermediate_size: int = 16, norm_topk_prob: bool = True, seed: int = 0,
                   experts_implementation: Optional[str] = None):
    """A randomly initialised Qwen3MoeForCausalLM over the character vocabulary (eval mode, fp32).

    Router weights are drawn wider than transformers' init (std 0.02 makes all router logits
    nearly equal, so top-k would hinge on rounding); std 1 gives clearly ranked experts.
    """
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        vocab_size=len(VOCAB), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        moe_intermediate_size=moe_intermediate_size, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        num_experts=num_experts, num_experts_per_tok=top_k, norm_topk_prob=norm_topk_prob,
        max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                param.normal_(0.0, 1.0)
    if experts_implementation is not None:
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation(experts_implementation)
        elif experts_implementation != "eager":  # transformers 4.x only has its expert loop
            raise ValueError(f"transformers {__import__('transformers').__version__} has no experts "
                             f"implementation {experts_implementation!r}")
    return model.eval()


def save_tiny_model(directory: str, **kwargs) -> str:
    """tiny_qwen3_moe(**kwargs) saved with save_pretrained + the character tokenizer."""
    model = tiny_qwen3_moe(**kwargs)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    add_v4_config_keys(directory)
    save_hf_tokenizer(directory)
    return directory


# ---- random decode models of any shape -----------------------------------------------------


def embedding_directions(hidden_size: int, num_topics: int = SKEWED_TOPICS, seed: int = 0) -> torch.Tensor:
    """float32 [1 + num_topics, H], orthonormal rows: u0 (shared by every token), then one per topic."""
    g = torch.Generator().manual_seed(1_000_003 + seed)
    q, _ = torch.linalg.qr(torch.randn(hidden_size, 1 + num_topics, generator=g))
    return q.T.contiguous()


def token_topics(vocab_size: int, num_topics: int = SKEWED_TOPICS) -> torch.Tensor:
    return torch.arange(vocab_size) % num_topics


def random_decode_weights(shape: ModelShape, device="cpu", dtype=torch.bfloat16, seed: int = 0,
                          num_topics: int = SKEWED_TOPICS) -> ModelWeights:
    """Random weights scaled so activations stay O(1) (never zeros: a benchmark must not time
    on zeros), built layer by layer on `device` (fast on a GPU: the 30B shape's 61 GB in
    seconds). Routers start uncalibrated (calibrated_routers + set_routers replace them)."""
    device = torch.device(device)
    H, D, E, I = shape.hidden_size, shape.head_dim, shape.num_experts, shape.moe_intermediate_size
    g = torch.Generator(device=device).manual_seed(seed)

    def normal(*dims, std):
        return torch.empty(dims, device=device, dtype=dtype).normal_(0.0, std, generator=g)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    directions = embedding_directions(H, num_topics, seed).to(device)
    pop_share, topic_share, noise_share = EMBED_SHARES
    embed = normal(shape.vocab_size, H, std=noise_share ** 0.5).float()
    embed += (pop_share * H) ** 0.5 * directions[0]
    embed += (topic_share * H) ** 0.5 * directions[1:][token_topics(shape.vocab_size, num_topics).to(device)]
    embed = embed.to(dtype)
    routers = uniform_routers(shape, device=device, dtype=dtype, seed=seed, num_topics=num_topics)
    layers: List[LayerWeights] = []
    for i in range(shape.num_layers):
        lw = LayerWeights(input_norm=ones(H), post_norm=ones(H), wqkv=normal(shape.qkv_size, H, std=H ** -0.5),
                          q_norm=ones(D), k_norm=ones(D), wo=normal(H, shape.q_size, std=ATTENTION_SCALE * shape.q_size ** -0.5))
        if shape.is_moe(i):
            lw.router = routers[shape.moe_layers.index(i)]
            lw.experts = ExpertWeights(normal(E, 2 * I, H, std=H ** -0.5), normal(E, H, I, std=EXPERT_SCALE * I ** -0.5))
        else:
            lw.mlp_w13 = normal(2 * shape.intermediate_size, H, std=H ** -0.5)
            lw.mlp_w2 = normal(H, shape.intermediate_size, std=EXPERT_SCALE * shape.intermediate_size ** -0.5)
        layers.append(lw)
    lm_head = embed if shape.tie_word_embeddings else normal(shape.vocab_size, H, std=H ** -0.5)
    return ModelWeights(embed=embed, layers=layers, final_norm=ones(H), lm_head=lm_head)


def _noise_rows(shape: ModelShape, layer: int, seed: int, avoid: torch.Tensor) -> torch.Tensor:
    """float32 [E, H] ~ N(0, 1/H), orthogonal to the rows of `avoid` (CPU, seeded per layer)."""
    g = torch.Generator().manual_seed(7_919 * (seed + 1) + layer)
    rows = torch.randn(shape.num_experts, shape.hidden_size, generator=g) * shape.hidden_size ** -0.5
    basis, _ = torch.linalg.qr(avoid.T)
    return rows - (rows @ basis) @ basis.T


def uniform_routers(shape: ModelShape, device="cpu", dtype=torch.bfloat16, seed: int = 0,
                    num_topics: int = SKEWED_TOPICS) -> List[torch.Tensor]:
    """One [E, H] router per MoE layer, orthogonal to the embedding directions (uncalibrated:
    calibrated_routers also removes what a layer's hidden states share)."""
    directions = embedding_directions(shape.hidden_size, num_topics, seed)
    return [_noise_rows(shape, layer, seed, directions).to(device=device, dtype=dtype) for layer in shape.moe_layers]


def set_routers(weights: ModelWeights, shape: ModelShape, routers: List[torch.Tensor]) -> None:
    """Copy routers into the model's router tensors in place (captured graphs and a transformers
    model sharing these tensors see the change)."""
    for layer, router in zip(shape.moe_layers, routers):
        weights.layers[layer].router.copy_(router)


@torch.no_grad()
def calibrated_routers(model: DecodeModel, kind: str, seed: int = 0, num_topics: int = SKEWED_TOPICS,
                       calibration_batch: int = 8, calibration_length: int = 32) -> List[torch.Tensor]:
    """Routers of `kind` ("uniform" or "skewed", module doc) calibrated on the model's own hidden
    states: one prefill of random tokens records every MoE layer's input h; the noise rows are
    made orthogonal to the embedding directions and to the mean h (what all tokens share would
    otherwise act as a popularity bias) and scaled to unit spread; skewed routers add the
    SkewedRouter(E, seed=layer) structure read from h's projections on u0 and on the topics."""
    from oea_trt.decode.cache import KVCache

    if kind not in ROUTER_KINDS:
        raise ValueError(f"router kind must be one of {', '.join(ROUTER_KINDS)}, got {kind!r}")
    shape, weights = model.shape, model.weights
    device, dtype, n = weights.device, weights.dtype, num_topics
    directions = embedding_directions(shape.hidden_size, n, seed)
    g = torch.Generator().manual_seed(4_242 + seed)
    ids = torch.randint(shape.vocab_size, (calibration_batch, calibration_length), generator=g)
    topic_of = token_topics(shape.vocab_size, n)[ids].reshape(-1)
    hidden = {}
    model.routing_observer = lambda layer, h, logits, routing: hidden.__setitem__(layer, h.float().cpu())
    try:
        cache = KVCache(shape, calibration_batch, calibration_length, device, dtype)
        model.prefill(ids.to(device), torch.ones_like(ids, device=device), cache)
    finally:
        model.routing_observer = None
    routers = []
    for layer in shape.moe_layers:
        h = hidden[layer]
        noise = _noise_rows(shape, layer, seed, torch.cat([directions, h.mean(0, keepdim=True)]))
        router = noise / (h @ noise.T).std()
        if kind == "skewed":
            proj = h @ directions.T
            kappa0 = proj[:, 0].mean()
            kappa = proj[:, 1:].gather(1, topic_of[:, None]).mean()
            skewed = SkewedRouter(shape.num_experts, seed=layer, num_topics=n)
            router = router + skewed.concentration * (
                0.5 * skewed.popularity[:, None] * directions[0][None, :] / kappa0 + skewed.topics.T @ directions[1:] / kappa)
        routers.append(router.to(device=device, dtype=dtype))
    return routers


def random_decode_model(shape: ModelShape, device="cpu", dtype=torch.bfloat16, seed: int = 0, routers: str = "uniform",
                        routing=None, **model_options) -> DecodeModel:
    """A DecodeModel with random_decode_weights and `routers` ("uniform" or "skewed")."""
    if routers not in ROUTER_KINDS:
        raise ValueError(f"routers must be one of {', '.join(ROUTER_KINDS)}, got {routers!r}")
    model = DecodeModel(shape, random_decode_weights(shape, device, dtype, seed), routing, **model_options)
    set_routers(model.weights, shape, calibrated_routers(model, routers, seed))
    return model


def random_qwen3_moe(shape: ModelShape, device="cpu", dtype=torch.bfloat16, seed: int = 0, routers: str = "uniform",
                     experts_implementation: Optional[str] = None):
    """A transformers Qwen3MoeForCausalLM with random weights of any shape (transformers 5.x):
    the tensors of random_decode_model(...), shared, not copied."""
    model = random_decode_model(shape, device, dtype, seed, routers)
    return to_hf(shape, model.weights, experts_implementation)
