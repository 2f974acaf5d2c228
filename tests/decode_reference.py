"""Shared by the decode tests: our decode path's per-step logits, and transformers' logits for
the same tokens (teacher forcing), so a comparison never drifts after one differing choice.

    tokens, ours = decode_logits(engine, input_ids, mask, steps)        # [B, steps], [steps, B, V]
    ref = hf_logits(hf_model, input_ids, mask, tokens)                  # [steps, B, V]
The first row of logits is the prefill's (last prompt position), then one per decode step.
"""
import inspect

import torch

from oea_trt.decode import Sampler


def decode_logits(engine, input_ids, attention_mask, steps, sampler=Sampler()):
    """Greedy (or `sampler`) decode through the engine's own pieces (graph replays on CUDA)."""
    L = input_ids.shape[1]
    from oea_trt.decode import capacity_for

    state, first, prefill_logits, _ = engine.prefill(input_ids.to(engine.model.device),
                                                     attention_mask.to(engine.model.device), capacity_for(L + steps),
                                                     sampler)
    logits = [prefill_logits.float().cpu()]
    runner = engine.step_runner(state, sampler)
    for _ in range(steps - 1):
        runner.replay()
        logits.append(runner.logits.float().cpu())
    tokens = torch.cat([first[:, None].cpu(), state.generated[:, :steps - 1].cpu()], dim=1)
    return tokens, torch.stack(logits)


def _cache_kw(model) -> str:
    """transformers renamed forward's past_key_values to cache (5.2x); pass whichever it takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output):
    for name in ("cache", "past_key_values"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise AttributeError("transformers returned no KV cache (use_cache=True)")


@torch.no_grad()
def hf_logits(model, input_ids, attention_mask, tokens):
    """transformers' logits for prompts input_ids [B, L] followed by tokens [B, n] fed one per step
    (positions from the attention mask, as generate() makes them). -> float32 [n, B, V] on the CPU."""
    device = next(model.parameters()).device
    ids, mask = input_ids.to(device), attention_mask.to(device)
    tokens = tokens.to(device)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    logits = [out.logits[:, -1].float().cpu()]
    cache, kw = _cache_of(out), _cache_kw(model)
    last = positions[:, -1:]
    for step in range(tokens.shape[1] - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last = last + 1
        out = model(input_ids=tokens[:, step:step + 1], attention_mask=mask, position_ids=last, use_cache=True,
                    **{kw: cache})
        cache = _cache_of(out)
        logits.append(out.logits[:, -1].float().cpu())
    return torch.stack(logits)


def relative_error(got, want):
    """max |got - want| / max |want| per step (float [n])."""
    return ((got - want).abs().amax(dim=(1, 2)) / want.abs().amax(dim=(1, 2))).clamp(min=0)


def tokens_agree_up_to_ties(got_tokens, want_tokens, want_logits, tie):
    """'' when greedy tokens agree, or when each row's first disagreement is a near-tie of the
    reference (its two candidates' logits within `tie`); else what differed."""
    for row in range(got_tokens.shape[0]):
        differ = (got_tokens[row] != want_tokens[row]).nonzero()
        if not len(differ):
            continue
        step = int(differ[0])
        a, b = int(got_tokens[row, step]), int(want_tokens[row, step])
        gap = float((want_logits[step, row, a] - want_logits[step, row, b]).abs())
        if gap > tie:
            return f"row {row} step {step}: token {a} vs reference {b}, reference logit gap {gap:.4f} > {tie}"
    return ""


class RoutingRecorder:
    """Records every routing call of a DecodeModel (eager runs): per layer, a list of
    (router_logits, expert_ids, weights) on the CPU, in call order (prefill first)."""

    def __init__(self, model):
        self.model = model
        self.calls = {layer: [] for layer in model.shape.moe_layers}

    def __call__(self, layer, hidden, router_logits, routing):
        self.calls[layer].append((router_logits.detach().float().cpu(), routing.expert_ids.cpu(),
                                  routing.weights.cpu()))

    def __enter__(self):
        self.model.routing_observer = self
        return self

    def __exit__(self, *exc):
        self.model.routing_observer = None


class ReplayedRouting:
    """Makes a transformers 5.x Qwen3-MoE model route each call exactly as recorded (forward hooks
    on the routers), so the two models are compared on the same routing. Fill slots (id -1)
    become the row's first expert with weight 0, which transformers' experts code accepts."""

    def __init__(self, hf_model, recorder):
        from oea_trt.integrations.hf import moe_layers

        self.hooks = []
        self.pending = {layer: list(calls) for layer, calls in recorder.calls.items()}
        for moe in moe_layers(hf_model):
            self.hooks.append(moe.block.gate.register_forward_hook(self._hook(moe.index)))

    def _hook(self, layer):
        def replay(module, args, output):
            _, ids, weights = self.pending[layer].pop(0)
            device = output[0].device
            ids, weights = ids.to(device).long(), weights.to(device)
            fill = ids < 0
            first = torch.where(fill[:, :1], torch.zeros_like(ids[:, :1]), ids[:, :1])
            ids = torch.where(fill, first, ids)
            return (output[0], weights.masked_fill(fill, 0).to(output[0].dtype), ids) + tuple(output[3:])
        return replay

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()
