"""A deliberately literal implementation of the paper's OEA algorithms, one token at a time.

It is the test oracle for oea_trt.routing.reference: slow, plain Python, written from the spec's prose
(docs/oea-spec.md steps 1-7) and not from the vectorized code, so that the two can disagree.
"""
import math
import struct

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def oracle_route(logits, cfg, token_kind=None):
    """logits: numpy float array [T, E] (values as the router produced them, already rounded to
    the logits dtype). Returns (ids [T][k_max] list of int, weights [T][k_max] list of float)."""
    T, E = logits.shape
    kinds = [0] * T if token_kind is None else [int(v) for v in token_kind]

    # Step 1: fp32 logits, NaN -> -inf, +inf -> largest float; softmax; ranking, ties to lower index.
    rows, scores, rankings = [], [], []
    for i in range(T):
        row = []
        for e in range(E):
            v = float(np.float32(logits[i, e]))
            if math.isnan(v):
                v = -math.inf
            elif v == math.inf:
                v = FLT_MAX
            row.append(v)
        rows.append(row)
        m = max(row)
        if m == -math.inf:
            scores.append([0.0] * E)
        else:
            ex = [math.exp(v - m) if v != -math.inf else 0.0 for v in row]
            s = sum(ex)
            scores.append([x / s for x in ex])
        rankings.append(sorted(range(E), key=lambda e: (-row[e], e)))

    def selectable(i, e):
        return rows[i][e] != -math.inf

    num_decode = sum(1 for k in kinds if k == 0)
    k0 = cfg.k0
    for min_tokens, scheduled in sorted(cfg.k0_schedule or ()):
        if num_decode >= min_tokens:
            k0 = scheduled

    # Step 2: baseline B_i of n_i = min(k0, k_max, t_i) experts.
    baselines = {}
    for i in range(T):
        if kinds[i] != 0:
            continue
        t_i = E
        if cfg.top_p < 1.0:
            mass = 0.0
            for t in range(1, E + 1):
                mass += scores[i][rankings[i][t - 1]]
                if mass >= _f32(cfg.top_p):
                    t_i = t
                    break
        n_i = min(k0, cfg.k_max, t_i)
        baselines[i] = [e for e in rankings[i][:n_i] if selectable(i, e)], n_i

    # Step 3: the loaded set.
    s_base = set()
    for i, (b, _) in baselines.items():
        s_base.update(b)
    context_topk = {}
    for i in range(T):
        if kinds[i] == 1:
            context_topk[i] = [e for e in rankings[i][: cfg.top_k] if selectable(i, e)]
            if cfg.piggyback_on_context:
                s_base.update(context_topk[i])

    # Steps 4-5: piggyback (never beyond k_max), context = vanilla top-k, padding = nothing.
    selections = []
    for i in range(T):
        if kinds[i] == 0:
            b, n_i = baselines[i]
            s_i = list(b)
            for j in range(n_i + 1, min(cfg.max_rank, E) + 1):
                if len(s_i) == cfg.k_max:
                    break
                e = rankings[i][j - 1]
                if e in s_base and selectable(i, e):
                    s_i.append(e)
            selections.append(s_i)
        elif kinds[i] == 1:
            selections.append(context_topk[i])
        else:
            selections.append([])

    # Steps 6-7: weights, fill.
    active = sorted({e for s in selections for e in s})
    ids, weights = [], []
    for i, s_i in enumerate(selections):
        raw = [scores[i][e] for e in s_i]
        total = sum(raw)
        w = [r / total for r in raw] if cfg.renormalize and total > 0 else raw
        if cfg.fill == "invalid":
            fill = -1
        elif cfg.fill == "num_experts":
            fill = E
        else:
            fill = s_i[0] if s_i else (active[0] if active else 0)
        pad = cfg.k_max - len(s_i)
        ids.append(s_i + [fill] * pad)
        weights.append(w + [0.0] * pad)
    return ids, weights, active
