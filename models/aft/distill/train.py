"""Distil all-MiniLM-L6-v2 into an AFT encoder, fit the topic head, export `aft-mini`.

The shipped bundle (after `corpus` and `embed`; all steps: scripts/train-aft-mini):
    python -m aft.distill.train --variant full --steps 6000 --batch-size 128 --lr 2e-3 \
        --train-embeddings --eval-every 0.1 --head-max 20000 \
        --out ../.work/aft-mini-train --export ../.work/aft-mini-train/bundle/aft-mini
(`--cpu-minutes` / `--wall-minutes` budget by time instead; the schedule follows whichever of
steps, CPU time and wall time is furthest along.)
Loss: 1 - cos(student, teacher) on L2-normalised sentence embeddings, plus the mean squared
error between the two in-batch cosine-similarity matrices (the pairwise geometry is what
similarity search and the Spearman metric consume).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aft.distill.embed import TRAIN_MAX_LEN, load_shards
from aft.distill.teacher import MAX_SEQ_LEN, MiniLM, load_tokenizer, write_tokenizer
from aft.encoder import AFTEncoder, EncoderConfig


def student_config(variant: str, num_labels: int = 0, **kw) -> EncoderConfig:
    """The aft-mini shape; only `variant` differs between the compared students."""
    base = dict(
        vocab_size=30522,
        d_model=256,
        n_layers=4,
        d_ff=768,
        max_len=MAX_SEQ_LEN,
        variant=variant,
        window=16,
        n_heads=8,
        kernel_size=15,
        bias_rank=64,
        pooling="mean",
        normalize=True,
        num_labels=num_labels,
        pad_token_id=0,
        embedding_dim=384,
        token_embedding_dim=None,
    )
    if variant == "conv":  # to_k is d x h, not d x d, and no position factors: widen the FFN
        base["d_ff"] = 956  # so that all variants hold the same number of parameters (+-0.1%)
    base.update(kw)
    return EncoderConfig(**base)


def init_from_teacher(model: AFTEncoder, table: Path) -> None:
    """Start the student as a bag of teacher token vectors.

    Token embeddings := the principal coordinates of `table` (the teacher's embedding of each
    vocabulary token alone, from `aft.distill.embed`; the teacher's input word embeddings if
    absent), scaled to unit variance so the randomly initialised blocks only perturb them; the
    output projection maps them back to the teacher's 384-d space (principal axes + mean).
    Averaged over a sentence this already approximates the teacher, so training refines context
    instead of learning 30k token vectors from ~10k sentences.
    """
    if table.exists():
        w = torch.from_numpy(np.load(table)).double()
    else:
        w = MiniLM().word_embeddings().double()
    k = model.token_embedding.weight.shape[1]
    mu = w.mean(0)
    _, _, v = torch.linalg.svd(w - mu, full_matrices=False)
    pcs = (w - mu) @ v[:k].T
    scale = 1.0 / pcs.std()
    pcs = pcs * scale
    with torch.no_grad():
        model.token_embedding.weight.copy_(pcs.float())
        if isinstance(model.proj, torch.nn.Linear) and model.proj.weight.shape == (w.shape[1], k):
            # ln_f leaves each token at unit variance: put the mean back at that scale.
            sigma = pcs.std(1).median()
            model.proj.weight.copy_(v[:k].T.float())
            model.proj.bias.copy_((mu * scale / sigma).float())


def make_batches(lengths: np.ndarray, batch_size: int, rng: random.Random) -> list[np.ndarray]:
    """Length-bucketed batches (little padding), in random order."""
    order = np.argsort(lengths + np.array([rng.random() for _ in lengths]), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def distill_loss(raw: torch.Tensor, target: torch.Tensor, rel_weight: float) -> torch.Tensor:
    s = F.normalize(raw, dim=-1)
    cos = (1.0 - (s * target).sum(-1)).mean()
    rel = F.mse_loss(s @ s.T, target @ target.T)
    return cos + rel_weight * rel


@torch.no_grad()
def embed_raw(model: AFTEncoder, seqs: list[list[int]], batch_size: int = 128) -> torch.Tensor:
    """Raw pooled embeddings, in input order (length-sorted batches for speed)."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.zeros(len(seqs), model.config.embedding_dim or model.config.d_model)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out[idx] = model(*pad([seqs[i] for i in idx]))[0]
    return out


def quick_spearman(model: AFTEncoder, seqs, teacher: np.ndarray, n_pairs: int = 20000) -> float:
    """Spearman of student vs teacher cosine over random held-out pairs (training monitor)."""
    from scipy.stats import spearmanr

    s = F.normalize(embed_raw(model, seqs), dim=-1).numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(s), n_pairs), rng.integers(0, len(s), n_pairs)
    keep = a != b
    a, b = a[keep], b[keep]
    return float(spearmanr((s[a] * s[b]).sum(-1), (teacher[a] * teacher[b]).sum(-1)).statistic)


def distill(args) -> tuple[AFTEncoder, dict]:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = load_tokenizer(TRAIN_MAX_LEN)
    recs, targets = load_shards(args.teacher, "train")
    if args.max_train:
        recs, targets = recs[: args.max_train], targets[: args.max_train]
    seqs = [e.ids for e in tok.encode_batch([r["text"] for r in recs])]
    targets = torch.from_numpy(targets)
    targets = F.normalize(targets, dim=-1)
    lengths = np.array([len(s) for s in seqs])
    held, held_t = load_shards(args.teacher, "heldout")
    held_seqs = [e.ids for e in tok.encode_batch([r["text"] for r in held[:512]])]
    held_t = held_t[:512]
    print(f"train texts {len(seqs)}, tokens {lengths.sum()}", flush=True)

    model = AFTEncoder(student_config(args.variant))
    if not args.no_teacher_init:
        init_from_teacher(model, args.teacher / "token_table.npy")
    # The token table is frozen unless --train-embeddings: Adam's dense update of its 7.8M
    # parameters adds ~10% to a step on 2 idle cores, and is worth it only with enough text
    # (at 250 steps on 200k texts: held-out Spearman 0.746 trained vs 0.743 frozen).
    model.token_embedding.weight.requires_grad_(args.train_embeddings)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.variant}: {n_params / 1e6:.2f}M parameters", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    table = model.token_embedding.weight
    # No weight decay on the token table: rows of tokens absent from the training texts get no
    # gradient, and decay alone would shrink them away from the teacher's vectors.
    groups = [
        {"params": [p for p in params if p is not table], "weight_decay": 0.01},
        {"params": [p for p in params if p is table], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)
    budget = args.cpu_minutes * 60.0

    def progress(step: int) -> float:
        """Fraction of the run done: by steps, or by CPU seconds of this process when a CPU
        budget is set (CPU time, unlike wall time, hardly depends on what else the machine
        runs, so equal-budget comparisons stay fair on shared cores)."""
        if budget:  # held-out checks are not charged to the budget
            p = (time.process_time() - c0 - c_eval) / budget
        else:
            p = step / args.steps
        if args.wall_minutes:  # a hard deadline as well: whichever runs out first
            p = max(p, (time.time() - t0) / (args.wall_minutes * 60.0))
        return p

    def lr_factor(p: float) -> float:  # linear warm-up over 5%, cosine decay to 5%
        if p < 0.05:
            return max(0.02, p / 0.05)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (p - 0.05) / 0.95))

    log = {"variant": args.variant, "params": n_params, "curve": []}
    t0, c0, step, batches = time.time(), time.process_time(), 0, []
    next_eval, c_eval = args.eval_every, 0.0
    rho0 = quick_spearman(model, held_seqs, held_t)
    log["curve"].append({"step": 0, "wall_s": 0, "cpu_s": 0, "rho": rho0})
    print(f"step 0 heldout-rho {rho0:.4f}", flush=True)
    c_eval = time.process_time() - c0
    while progress(step) < 1.0:
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(progress(step))
        if not batches:
            batches = make_batches(lengths, args.batch_size, rng)
        idx = batches.pop()
        model.train()
        raw, _ = model(*pad([seqs[i] for i in idx]))
        loss = distill_loss(raw, targets[idx], args.rel_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        done = progress(step) >= 1.0
        if step % 10 == 0:
            print(f"step {step} {time.time() - t0:.0f}s loss {loss.item():.4f}", flush=True)
        if progress(step) >= next_eval or done:
            next_eval += args.eval_every
            ce = time.process_time()
            rho = quick_spearman(model, held_seqs, held_t)
            c_eval += time.process_time() - ce
            el, cpu = time.time() - t0, time.process_time() - c0
            point = {"step": step, "wall_s": round(el), "cpu_s": round(cpu), "rho": rho}
            log["curve"].append(point | {"loss": loss.item()})
            print(f"step {step} {el:.0f}s cpu {cpu:.0f}s heldout-rho {rho:.4f}", flush=True)
    log["steps"] = step
    log["train_wall_seconds"] = round(time.time() - t0)
    log["train_cpu_seconds"] = round(time.process_time() - c0 - c_eval)
    log["train_texts"] = len(seqs)
    return model, log


def fit_head(model: AFTEncoder, args, log: dict) -> list[str]:
    """Linear topic head on the frozen encoder's raw pooled embeddings of WordNet glosses."""
    from aft.distill.corpus import LEXNAMES, load

    tok = load_tokenizer(MAX_SEQ_LEN)
    train = [r for r in load(args.corpus / "train.jsonl") if r["kind"] == "definition"]
    # A random subset: encoding all 105k glosses on 2 shared cores takes too long for little gain.
    random.Random(args.seed).shuffle(train)
    train = train[: args.head_max]
    labels = sorted(LEXNAMES)  # all 45, whichever the subset happens to contain
    t0 = time.time()
    x = embed_raw(model, [e.ids for e in tok.encode_batch([r["text"] for r in train])])
    y = torch.tensor([labels.index(r["lexname"]) for r in train])
    head = torch.nn.Linear(x.shape[1], len(labels))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(args.head_epochs):  # full-batch: 100k x 384 fits easily
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (head(x).argmax(-1) == y).float().mean().item()
    print(f"head: {len(labels)} labels, train acc {acc:.3f}, {time.time() - t0:.0f}s", flush=True)
    log["head"] = {"labels": len(labels), "train_glosses": len(train), "train_acc": acc}
    # Put the head into a model built with num_labels, keeping the encoder weights as they are.
    return labels, head


def with_head(model: AFTEncoder, labels: list[str], head: torch.nn.Linear) -> AFTEncoder:
    """The same encoder rebuilt with num_labels, the fitted head copied in."""
    cfg = asdict(model.config)
    cfg["num_labels"] = len(labels)
    full = AFTEncoder(EncoderConfig(**cfg))
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"head.weight", "head.bias"}, (missing, unexpected)
    full.head.load_state_dict(head.state_dict())
    return full.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="full", choices=["full", "local", "conv", "simple"])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--rel-weight", type=float, default=2.0)
    ap.add_argument("--max-train", type=int, default=0, help="use the first N cached texts")
    ap.add_argument("--cpu-minutes", type=float, default=0.0, help="budget in CPU time (not steps)")
    ap.add_argument(
        "--wall-minutes", type=float, default=0.0, help="also stop by wall time (deadline)"
    )
    ap.add_argument("--eval-every", type=float, default=0.25, help="fraction of the run")
    ap.add_argument("--train-embeddings", action="store_true", help="also train the token table")
    ap.add_argument("--head-epochs", type=int, default=300)
    ap.add_argument(
        "--head-max",
        type=int,
        default=8000,
        help="glosses used to fit the head; 0: no head, no export",
    )
    ap.add_argument("--no-teacher-init", action="store_true")
    ap.add_argument("--student", type=Path, default=None, help="skip distillation: student.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    ap.add_argument("--teacher", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--export", type=Path, default=None, help="also export the bundle here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.student:  # reuse a distilled encoder: only fit the head and export
        ck = torch.load(args.student)
        model = AFTEncoder(EncoderConfig(**ck["config"]))
        model.load_state_dict(ck["state_dict"])
        log = json.loads((args.student.parent / "train_log.json").read_text())
    else:
        model, log = distill(args)
    torch.save(
        {"config": asdict(model.config), "state_dict": model.state_dict()}, args.out / "student.pt"
    )
    if not args.head_max:  # distillation only (variant comparison)
        (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
        return
    labels, head = fit_head(model, args, log)
    model = with_head(model, labels, head)
    torch.save(
        {"config": asdict(model.config), "state_dict": model.state_dict(), "labels": labels},
        args.out / "model.pt",
    )
    log["args"] = {k: str(v) for k, v in vars(args).items()}
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    if args.export:
        from aft.export import export_bundle

        tok_path = write_tokenizer(args.out / "tokenizer.json", MAX_SEQ_LEN)
        desc = "AFT sentence encoder distilled from all-MiniLM-L6-v2, WordNet topic head"
        out = export_bundle(
            model,
            tok_path,
            args.export,
            args.export.name,
            labels=labels,
            dtype="float16",
            description=desc,
        )
        print(f"exported {out}", flush=True)


if __name__ == "__main__":
    main()
