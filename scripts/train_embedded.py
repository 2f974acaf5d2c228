#!/usr/bin/env python3
"""Train the embedded Qwen3-MoE LM (oea_trt/models/embedded) on the synthetic multi-domain corpus.

    python3 scripts/train_embedded.py --out out/train                    # GPU: time-budgeted run
    python3 scripts/train_embedded.py --out /tmp/t --steps 5 --tiny      # CPU smoke test

Architecture: transformers Qwen3MoeForCausalLM, 128 experts, top-8, norm_topk_prob (as Qwen3),
3 layers, hidden 128, expert intermediate 64, character vocabulary (oea_trt.data). Everything
that decides the result is fixed: corpus seed (oea_trt.data.TRAIN_SEED), torch seed (--seed),
batch order (a seeded generator), and the step count, which --time-budget derives once from the
measured speed of the first steps and which is written to training.json (rerun with --steps N).
On CUDA the model runs in bf16 with float32 master weights (fast grouped-GEMM experts); on the
CPU in float32. Weights are stored in bf16 (save_pretrained: config.json + model.safetensors).

Outputs in --out: model/ (config.json, model.safetensors, tokenizer files), training_log.csv,
loss_curve.png, expert_usage.png, training.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time

START = time.time()

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from oea_trt.data import (EVAL_SEED, TRAIN_SEED, VOCAB, char_sequence_rows, char_sequences,  # noqa: E402
                          save_hf_tokenizer)  # noqa: E402
from oea_trt.data.domains import DOMAINS  # noqa: E402
from oea_trt.integrations.hf.portable import add_v4_config_keys  # noqa: E402

EMBEDDED_CONFIG = dict(
    vocab_size=len(VOCAB),
    hidden_size=128,
    intermediate_size=256,          # dense MLP size; unused (every layer is MoE) but required
    moe_intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    num_experts=128,
    num_experts_per_tok=8,
    norm_topk_prob=True,
    decoder_sparse_step=1,
    mlp_only_layers=[],
    max_position_embeddings=512,
    tie_word_embeddings=True,
    router_aux_loss_coef=0.001,     # Qwen3's value: balanced use of experts, still sharp routing
    hidden_act="silu",
    rms_norm_eps=1e-6,
    initializer_range=0.02,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
TINY_OVERRIDES = dict(hidden_size=32, moe_intermediate_size=16, num_hidden_layers=2, num_experts=16,
                      num_experts_per_tok=4, head_dim=8)


def log(msg: str) -> None:
    print(f"[{time.time() - START:7.1f}s] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, help="optimizer steps (default: derived from --time-budget)")
    p.add_argument("--time-budget", type=float, default=200.0,
                   help="seconds from process start to the end of training when --steps is not given")
    p.add_argument("--batch", type=int, default=64, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--pool", type=int, default=131072, help="training sequences generated up front")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="final LR as a fraction of the peak")
    p.add_argument("--warmup", type=int, default=150, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=0, help="held-out loss every N steps (0: 20 times a run)")
    p.add_argument("--seed", type=int, default=0, help="torch seed (init and batch order)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="compute dtype (auto: bfloat16 with float32 master weights on CUDA, float32 on CPU)")
    p.add_argument("--experts-implementation", default="auto",
                   help="transformers experts implementation (auto: first of grouped_mm, eager that works)")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="corpus generator processes")
    p.add_argument("--aux-loss", type=float, help="router aux-loss coefficient (default: the config's)")
    p.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke test of this script)")
    return p.parse_args(argv)


def _chunk(job):
    # numpy only: forked workers must not start torch's OpenMP pool.
    import numpy as np

    count, length, start = job
    return np.asarray(char_sequence_rows(count, length, TRAIN_SEED, start=start)[0], dtype=np.uint8)


def make_pool(rows: int, length: int, workers: int) -> torch.Tensor:
    """uint8 [rows, length] training sequences; row i is the same however the work is split."""
    import numpy as np

    chunk = 4096
    jobs = [(min(chunk, rows - s), length, s) for s in range(0, rows, chunk)]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: this process already holds torch's threads (and maybe CUDA).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            parts = list(ex.map(_chunk, jobs))
    else:
        parts = [_chunk(j) for j in jobs]
    return torch.from_numpy(np.concatenate(parts))


def lr_at(step: int, total: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_model(args, device):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    cfg_dict = dict(EMBEDDED_CONFIG, **(TINY_OVERRIDES if args.tiny else {}))
    if args.aux_loss is not None:
        cfg_dict["router_aux_loss_coef"] = args.aux_loss
    torch.manual_seed(args.seed)
    config = Qwen3MoeConfig(**cfg_dict)
    model = Qwen3MoeForCausalLM(config).to(device)
    return model, cfg_dict


def to_bf16_keeping_rope(model) -> None:
    """Cast to bf16 but keep RoPE's inv_freq in float32: rounded to bf16 the frequencies move
    by up to 0.4% (a quarter radian at position 256), and from_pretrained later rebuilds them in
    float32, so the model would be evaluated with other positions than it was trained with."""
    keep = {name: buf.clone() for name, buf in model.named_buffers() if name.endswith("inv_freq")}
    model.to(torch.bfloat16)
    for name, buf in keep.items():
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        setattr(owner, name.rsplit(".", 1)[1], buf)


def choose_experts_implementation(model, args, device, x) -> str:
    """First experts implementation whose forward+backward runs and is finite here."""
    candidates = ["grouped_mm", "eager"] if args.experts_implementation == "auto" else [args.experts_implementation]
    for impl in candidates:
        try:
            model.set_experts_implementation(impl)
            out = model(input_ids=x, labels=x, output_router_logits=True)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
            if torch.isfinite(out.loss):
                return impl
            log(f"experts implementation {impl}: non-finite loss, trying the next")
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next one
            log(f"experts implementation {impl} failed: {type(exc).__name__}: {exc}")
            model.zero_grad(set_to_none=True)
    raise RuntimeError(f"no experts implementation works among {candidates}")


@torch.no_grad()
def heldout_loss(model, eval_ids) -> float:
    model.eval()
    total, n = 0.0, 0
    for chunk in eval_ids.split(32):
        out = model(input_ids=chunk, labels=chunk)
        total += float(out.loss) * chunk.shape[0]
        n += chunk.shape[0]
    model.train()
    return total / n


@torch.no_grad()
def expert_usage(model, ids, labels, num_experts):
    """usage[layer][domain] = fraction of that domain's token-slots routed to each expert."""
    model.eval()
    out = model(input_ids=ids, output_router_logits=True)
    model.train()
    k = model.config.num_experts_per_tok
    usage = []
    for logits in out.router_logits:  # [B*L, E] per layer
        top = logits.float().topk(k, dim=-1).indices.view(ids.shape[0], -1, k)
        per_domain = {}
        for d in sorted(set(labels)):
            rows = [i for i, lab in enumerate(labels) if lab == d]
            counts = torch.bincount(top[rows].reshape(-1), minlength=num_experts).float()
            per_domain[d] = (counts / counts.sum()).cpu()
        usage.append(per_domain)
    return usage


def specialisation_summary(usage, top: int = 16):
    """Per layer: experts covering 80% of each domain's slots (mean over domains), and the mean
    overlap of two domains' `top` most used experts (1.0 = same experts, ~top/E = unrelated)."""
    rows = []
    for layer, per_domain in enumerate(usage):
        cover, tops = [], {}
        for d, u in per_domain.items():
            s = torch.sort(u, descending=True).values.cumsum(0)
            cover.append(int((s < 0.8).sum()) + 1)
            tops[d] = set(torch.topk(u, top).indices.tolist())
        names = list(tops)
        overlaps = [len(tops[a] & tops[b]) / top for i, a in enumerate(names) for b in names[i + 1:]]
        used = int((torch.stack(list(per_domain.values())).sum(0) > 0).sum())
        rows.append({"layer": layer, "experts_used": used,
                     "experts_for_80pct_of_a_domain": sum(cover) / len(cover),
                     f"top{top}_overlap_between_domains": sum(overlaps) / max(1, len(overlaps))})
    return rows


def plot_curves(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_loss"] for r in rows], lw=0.8, label="train CE (per step)")
    ev = [r for r in rows if r["eval_loss"] != ""]
    ax.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="held-out CE")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Embedded Qwen3-MoE (128 experts, top-8) on the synthetic corpus")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_usage(usage, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(usage), 1, figsize=(10, 1.2 + 1.3 * len(usage)), squeeze=False)
    for layer, per_domain in enumerate(usage):
        names = list(per_domain)
        mat = torch.stack([per_domain[d] for d in names]).numpy()
        ax = axes[layer][0]
        ax.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel(f"layer {layer}", fontsize=8)
    axes[-1][0].set_xlabel("expert")
    fig.suptitle("Share of each domain's top-8 slots per expert (vanilla routing)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reproduce_command(argv, steps: int) -> str:
    """This run's command line with the step count pinned (and no time budget)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--steps", "--time-budget"):
            skip = True
            continue
        if arg.startswith(("--steps=", "--time-budget=")):
            continue
        out.append(arg)
    return " ".join(["python3 scripts/train_embedded.py"] + out + ["--steps", str(steps)])


def write_training_md(path: str, s: dict) -> None:
    """How this model was trained, with the run's real numbers (shipped next to the weights)."""
    a, c = s["args"], s["config"]
    how_steps = ("The step count was fixed by --steps" if a["steps"] else
                 f"The step count was derived once from `--time-budget {a['time_budget']:g}` and the speed of the first steps")
    spec_rows = "\n".join(
        f"| {r['layer']} | {r['experts_used']} | {r['experts_for_80pct_of_a_domain']:.1f} | "
        f"{list(r.values())[-1]:.2f} |" for r in s["specialisation"])
    text = f"""# The embedded Qwen3-MoE model: how it was trained

Produced by `scripts/train_embedded.py` (run by `scripts/gpu/train.sh`); every number below is
from that run (`training.json`, `training_log.csv`).

## Model
transformers `Qwen3MoeForCausalLM`: {c['num_hidden_layers']} layers, hidden {c['hidden_size']},
{c['num_attention_heads']} query / {c['num_key_value_heads']} KV heads of {c['head_dim']}, every layer MoE with
{c['num_experts']} experts of intermediate size {c['moe_intermediate_size']}, top-{c['num_experts_per_tok']},
norm_topk_prob={c['norm_topk_prob']} (Qwen3's routing), router aux-loss coefficient
{c['router_aux_loss_coef']}, tied embeddings, vocabulary of {c['vocab_size']} characters
(`oea_trt.data.tokenizer`). {s['parameters'] / 1e6:.2f} M parameters, stored in bf16
({s['weights_bytes'] / 1e6:.1f} MB `model.safetensors`).

## Data
The synthetic corpus of `oea_trt.data` ({", ".join(s['domains'])}), seed {s['corpus_seed']}:
{s['pool_rows']} sequences of {a['seq_len']} characters, each one domain's documents packed together,
batches of {a['batch']} sequences drawn with replacement by a generator seeded with {s['torch_seed']}.
Held-out loss: seed {s['eval_seed']} (also the default of `oea-trt eval`).

## Optimisation
AdamW (betas 0.9/0.95, weight decay {a['weight_decay']} on matrices), peak LR {a['lr']}, linear
warm-up {a['warmup']} steps, cosine decay to {a['min_lr_ratio']} x peak, gradient clipping 1.0;
{s['compute_dtype']} compute{" with float32 master weights" if s['compute_dtype'] == "bfloat16" else ""}, experts
implementation `{s['experts_implementation']}`; torch seed {s['torch_seed']}.
{s['steps']} steps ({s['tokens_seen'] / 1e6:.1f} M tokens) in {s['train_seconds']} s
({s['ms_per_step']} ms/step) on {s['gpu'] or s['device']}; torch {s['versions']['torch']},
transformers {s['versions']['transformers']}. {how_steps}; to retrain the same schedule:

    {s['reproduce']}

## Result
Final train cross-entropy {s['final_train_loss']:.4f}, held-out {s['final_eval_loss']:.4f} nats/char.
Loss curve: `loss_curve.png` (data: `training_log.csv`).

Expert specialisation under vanilla routing (held-out text; `expert_usage.png` shows each
domain's share of top-8 slots per expert):

| layer | experts used | experts holding 80% of a domain's slots | top-16 overlap between domains |
|---|---|---|---|
{spec_rows}
"""
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    log(f"device {device}; torch {torch.__version__}; python {platform.python_version()}")

    t0 = time.time()
    pool_rows = args.pool if not args.steps else min(args.pool, max(args.batch, args.steps * args.batch))
    pool = make_pool(pool_rows, args.seq_len, args.workers)
    eval_ids, eval_labels = char_sequences(4 * len(DOMAINS) * 4, args.seq_len, EVAL_SEED)
    log(f"corpus: {pool.shape[0]} x {pool.shape[1]} training tokens (seed {TRAIN_SEED}) in {time.time() - t0:.1f}s; "
        f"held-out {tuple(eval_ids.shape)} (seed {EVAL_SEED})")
    eval_ids = eval_ids.to(device)

    model, cfg_dict = build_model(args, device)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams / 1e6:.2f} M parameters")
    use_bf16 = args.dtype == "bfloat16" or (args.dtype == "auto" and device.type == "cuda")
    if use_bf16:
        to_bf16_keeping_rope(model)  # bf16 compute; the optimizer keeps float32 master weights
    params = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone().requires_grad_(True) for p in params] if use_bf16 else params
    decay = [m for m in master if m.dim() >= 2]
    no_decay = [m for m in master if m.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=(device.type == "cuda"))
    gen = torch.Generator().manual_seed(args.seed)
    model.train()

    impl = choose_experts_implementation(model, args, device, pool[: min(4, len(pool))].long().to(device))
    log(f"experts implementation: {impl}")

    def train_step(step: int, total: int):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args)
        idx = torch.randint(0, pool.shape[0], (args.batch,), generator=gen)
        x = pool[idx].long().to(device, non_blocking=True)
        out = model(input_ids=x, labels=x, output_router_logits=True)
        out.loss.backward()
        if use_bf16:
            for p, m in zip(params, master):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        grad_norm = torch.nn.utils.clip_grad_norm_(master, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if use_bf16:
            with torch.no_grad():
                for p, m in zip(params, master):
                    p.copy_(m)
        aux = out.aux_loss.detach()
        lm = out.loss.detach() - model.config.router_aux_loss_coef * aux
        return lm, aux, grad_norm

    total = args.steps
    rows, pending = [], []
    step = 0
    # Steps 10..40 set the pace: the first steps pay one-time costs (kernel selection, caches);
    # timing them too made the H200 run use only half of its budget.
    warm, calibrate = 10, 40
    t_train = time.time()
    t_cal = t_train
    while total is None or step < total:
        lm, aux, gn = train_step(step, total or 10 ** 9)
        pending.append((step, lm, aux, gn, lr_at(step, total or 10 ** 9, args), time.time() - t_train))
        step += 1
        if total is None and step in (warm, calibrate):
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step == warm:
                t_cal = time.time()
            else:
                per_step = (time.time() - t_cal) / (calibrate - warm)
                reserve = 25.0  # held-out evaluations, usage statistics, saving
                remaining = args.time_budget - (time.time() - START) - reserve
                total = max(calibrate + 1, calibrate + int(remaining / per_step))
                log(f"{per_step * 1e3:.1f} ms/step over steps {warm}-{calibrate}; "
                    f"training {total} steps to fit --time-budget {args.time_budget:.0f}s")
        every = args.eval_every or max(1, (total or 1000) // 20)
        if step % every == 0 or (total is not None and step == total):
            ev = heldout_loss(model, eval_ids)
            for i, (s, l, a, g, lr, t) in enumerate(pending):
                rows.append({"step": s + 1, "time_s": round(t, 2), "train_loss": float(l),
                             "aux_loss": float(a), "grad_norm": float(g), "lr": lr,
                             "eval_loss": ev if i == len(pending) - 1 else ""})
            pending = []
            log(f"step {step}/{total}: train CE {rows[-1]['train_loss']:.4f}, aux {rows[-1]['aux_loss']:.4f}, "
                f"held-out CE {ev:.4f}, lr {rows[-1]['lr']:.2e}")
    train_seconds = time.time() - t_train
    log(f"trained {step} steps in {train_seconds:.1f}s ({train_seconds / step * 1e3:.1f} ms/step)")

    usage_ids, usage_labels = char_sequences(8 * len(DOMAINS), 128, EVAL_SEED)
    usage = expert_usage(model, usage_ids.to(device), usage_labels, model.config.num_experts)
    spec = specialisation_summary(usage, top=min(16, model.config.num_experts))
    for r in spec:
        log(f"layer {r['layer']}: {r['experts_used']} experts used; a domain needs "
            f"{r['experts_for_80pct_of_a_domain']:.1f} experts for 80% of its slots; "
            f"top-16 overlap between domains {list(r.values())[-1]:.2f}")

    model_dir = os.path.join(args.out, "model")
    model.to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    add_v4_config_keys(model_dir)
    save_hf_tokenizer(model_dir)
    with open(os.path.join(args.out, "training_log.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_curves(rows, os.path.join(args.out, "loss_curve.png"))
    plot_usage(usage, os.path.join(args.out, "expert_usage.png"))
    import transformers

    summary = {
        "script": "scripts/train_embedded.py", "argv": sys.argv[1:], "args": vars(args),
        "steps": step, "pool_rows": int(pool.shape[0]), "tokens_seen": step * args.batch * args.seq_len, "train_seconds": round(train_seconds, 1),
        "ms_per_step": round(train_seconds / step * 1e3, 2), "parameters": nparams,
        "corpus_seed": TRAIN_SEED, "eval_seed": EVAL_SEED, "torch_seed": args.seed, "domains": list(DOMAINS),
        "experts_implementation": impl, "compute_dtype": "bfloat16" if use_bf16 else "float32",
        "final_train_loss": rows[-1]["train_loss"], "final_eval_loss": rows[-1]["eval_loss"],
        "specialisation": spec, "config": cfg_dict, "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "weights_bytes": os.path.getsize(os.path.join(model_dir, "model.safetensors")),
        "wall_seconds": round(time.time() - START, 1),
        "reproduce": reproduce_command(sys.argv[1:], step),
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=2)
    write_training_md(os.path.join(args.out, "TRAINING.md"), summary)
    log(f"saved {model_dir} ({summary['weights_bytes'] / 1e6:.1f} MB weights); final held-out CE "
        f"{summary['final_eval_loss']:.4f}; total {summary['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
