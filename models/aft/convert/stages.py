"""The two conversion stages on one loop (`run_stage`): align (each layer's AFT mixer imitates
that layer's softmax attention on the teacher's own hidden states) and distil (the whole model
against the teacher run on the same batch). Each is resumable: a checkpoint every few minutes
and on SIGTERM/SIGINT, the finished stage's weights in `<out>/<stage>.pt`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from aft.convert.build import layer_outputs
from aft.convert.source import sentence_targets
from aft.distill.bookkeeping import (
    Clock,
    Progress,
    Stopper,
    check_resume,
    fraction_done,
    load_checkpoint,
    lr_factor,
    restore_rng,
    save_checkpoint,
)
from aft.distill.data import TrainSet, epoch_batches
from aft.distill.losses import distill_loss, document_loss
from aft.encoder import AFTEncoder
from aft.head.embed import pad


def relative_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """|pred - target|^2 / |target|^2 over the real tokens (B, T, d): 0 is exact, 1 is as far as
    predicting zero."""
    m = mask[:, :, None].to(torch.float32)
    diff = ((pred.float() - target.float()) ** 2 * m).sum()
    return diff / ((target.float() ** 2) * m).sum().clamp_min(1e-12)


@dataclass
class Stage:
    """One stage: what it trains, how long, and the loss of a batch of training rows."""

    name: str
    groups: list[dict]  # optimiser parameter groups, each with its peak "lr"
    budget: SimpleNamespace  # steps, cpu_minutes, wall_minutes (aft.distill.bookkeeping)
    settings: dict  # what must match to resume
    batch_loss: Callable[[np.ndarray, int], tuple[torch.Tensor, dict]]
    batch_size: int
    seed: int
    eval_steps: int = 200
    patience: int = 0  # monitor checks without gain before stopping; 0: never early
    keep_best: bool = True  # end on the monitor's best weights (else on the last)
    min_delta: float = 0.0005


def run_stage(
    stage: Stage,
    model: AFTEncoder,
    data: TrainSet,
    out: Path,
    monitor: Callable[[], float],
    on_checkpoint: Callable[[], None] = lambda: None,
    checkpoint_minutes: float = 5.0,
) -> Progress:
    """Train `stage` to its budget (or until the monitor stalls); leaves the model on the
    monitor's best weights (or the last, as the stage says) and writes them to <out>/<name>.pt.
    A finished stage only loads them."""
    done, ck_path = out / f"{stage.name}.pt", out / f"{stage.name}.ckpt"
    best_path = out / f"{stage.name}-best.pt"
    budget = vars(stage.budget)
    if done.exists():  # finished: only a larger budget continues it (from its checkpoint)
        saved = torch.load(done, weights_only=False)
        before = Progress(**saved["progress"])
        if before.stopped == "early" or fraction_done(stage.budget, before) >= 1.0:
            model.load_state_dict(saved["model"])
            print(f"{stage.name}: done before ({before.stopped})", flush=True)
            return before
    opt = torch.optim.AdamW(stage.groups)
    peaks = [g["lr"] for g in opt.param_groups]
    ck = load_checkpoint(ck_path)
    pr = Progress()
    if ck is not None:
        check_resume(ck, stage.settings, budget, lambda _key: None)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        pr = Progress(**ck["progress"])
        pr.stopped = ""
        restore_rng(ck)
        print(f"{stage.name}: resumed at step {pr.step}", flush=True)
    stopper, clock = Stopper(), Clock()

    def tick() -> None:
        wall, cpu = clock.lap()
        pr.wall_s, pr.cpu_s = pr.wall_s + wall, pr.cpu_s + cpu

    def check(log: dict) -> None:
        started = time.process_time()
        rho = monitor()
        clock.exclude_cpu(time.process_time() - started)
        tick()
        pr.curve.append({"step": pr.step, "wall_s": round(pr.wall_s), "rho": rho} | log)
        if rho > pr.best_rho + stage.min_delta:
            pr.best_rho, pr.best_step, pr.bad_checks = rho, pr.step, 0
            torch.save(model.state_dict(), best_path)
        else:
            pr.bad_checks += 1
        print(f"{stage.name} step {pr.step} wall {pr.wall_s:.0f}s monitor-rho {rho:.4f} "
              f"(best {pr.best_rho:.4f} at {pr.best_step}) {log}", flush=True)  # fmt: skip

    def checkpoint() -> None:
        save_checkpoint(ck_path, model, opt, pr, stage.settings, budget)
        on_checkpoint()

    if not pr.curve:
        check({})
    params = [p for g in stage.groups for p in g["params"]]
    batches = epoch_batches(data.lengths, stage.batch_size, stage.seed, pr.epoch)
    last_ck, sums, t_log = time.time(), {}, time.time()
    while True:
        p = fraction_done(stage.budget, pr)
        if p >= 1.0:
            pr.stopped = "schedule"
        elif stage.patience and pr.bad_checks >= stage.patience:
            pr.stopped = "early"
        elif stopper.signal:
            pr.stopped = "interrupted"
        if pr.stopped:
            break
        for g, peak in zip(opt.param_groups, peaks, strict=True):
            g["lr"] = peak * lr_factor(p)
        if pr.pos >= len(batches):
            pr.epoch, pr.pos = pr.epoch + 1, 0
            batches = epoch_batches(data.lengths, stage.batch_size, stage.seed, pr.epoch)
        model.train()
        loss, log = stage.batch_loss(batches[pr.pos], pr.step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        pr.step, pr.pos = pr.step + 1, pr.pos + 1
        tick()
        for k, v in (log | {"loss": loss.item()}).items():
            sums[k] = sums.get(k, 0.0) + v
        if pr.step % 25 == 0:
            means = {k: round(v / 25, 4) for k, v in sums.items()}
            print(f"{stage.name} step {pr.step} {means} lr x{lr_factor(p):.2f} "
                  f"{(time.time() - t_log) / 25:.2f}s/step", flush=True)  # fmt: skip
            sums, t_log = {}, time.time()
        if pr.step % stage.eval_steps == 0:
            check({"loss": round(loss.item(), 4)})
        if pr.step % stage.eval_steps == 0 or time.time() - last_ck > checkpoint_minutes * 60:
            checkpoint()
            last_ck = time.time()
    tick()
    if pr.stopped != "interrupted" and pr.curve[-1]["step"] != pr.step:
        check({})
    checkpoint()
    if pr.stopped == "interrupted":
        raise SystemExit(f"{stage.name}: stopped by signal {stopper.signal} at step {pr.step}; "
                         "the same command continues from the checkpoint")  # fmt: skip
    if stage.keep_best and best_path.exists() and pr.best_step != pr.step:
        model.load_state_dict(torch.load(best_path))
    torch.save({"model": model.state_dict(), "progress": asdict(pr)}, done)
    kept = pr.best_step if stage.keep_best else pr.step
    print(f"{stage.name}: stopped ({pr.stopped}) at step {pr.step}; weights of step {kept} "
          f"(best monitor {pr.best_rho:.4f} at {pr.best_step})", flush=True)  # fmt: skip
    return pr


def align_stage(model: AFTEncoder, teacher, data: TrainSet, args) -> Stage:
    """Stage 1: only the mixers train; each layer's loss is the relative error of its mixer's
    output against the teacher's attention output, both on the teacher's input to that layer."""
    for name, p in model.named_parameters():
        p.requires_grad_(".attn." in name)
    mixers = [p for n, p in model.named_parameters() if ".attn." in n]

    def batch_loss(rows: np.ndarray, _step: int) -> tuple[torch.Tensor, dict]:
        ids, mask = pad([data.ids(int(i)).tolist() for i in rows], 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            _, trace = teacher.trace(ids, mask)
            errors = [
                relative_error(block.attn(trace.inputs[i], mask > 0), trace.mixed[i], mask)
                for i, block in enumerate(model.blocks)
            ]
        return torch.stack(errors).mean(), {f"err{i}": e.item() for i, e in enumerate(errors)}

    return Stage(
        name="align",
        groups=[{"params": mixers, "lr": args.align_lr, "weight_decay": 0.0}],
        budget=SimpleNamespace(steps=args.align_steps, cpu_minutes=0.0, wall_minutes=0.0),
        settings={"align_lr": args.align_lr, "batch_size": args.batch_size, "seed": args.seed},
        batch_loss=batch_loss,
        batch_size=args.batch_size,
        seed=args.seed,
        eval_steps=max(1, args.align_steps // 4),
        keep_best=False,  # its loss is the mixers' error, not the sentence monitor
    )


def distil_stage(
    model: AFTEncoder, teacher, pooling: str, data: TrainSet, documents, args
) -> Stage:
    """Stage 2: every weight; the sentence loss of aft.distill, each layer's hidden states
    against the teacher's (relative error), and every --long-every steps a long-document batch
    (late chunking; the teacher vectors of its sections come from the label cache)."""
    for p in model.parameters():
        p.requires_grad_(True)
    named = list(model.named_parameters())
    mixers = [p for n, p in named if ".attn." in n]

    def decays(name: str, p: torch.Tensor) -> bool:
        """Weight decay on matrices only: not on LayerNorms, biases or the token table (rare
        tokens get no gradient, and decay alone would shrink their rows)."""
        return p.dim() >= 2 and "token_embedding" not in name

    matrices = [p for n, p in named if ".attn." not in n and decays(n, p)]
    others = [p for n, p in named if ".attn." not in n and not decays(n, p)]
    layers = len(model.blocks)

    def batch_loss(rows: np.ndarray, step: int) -> tuple[torch.Tensor, dict]:
        ids, mask = pad([data.ids(int(i)).tolist() for i in rows], 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            last, trace = teacher.trace(ids, mask)
            target = sentence_targets(last, mask, pooling)
            data.targets.put(rows, target.numpy())
            states = layer_outputs(model, ids, mask)
            raw, _ = model._outputs(states[-1], mask > 0)
        sentence = distill_loss(raw.float(), target, args.rel_weight)
        hidden = sum(relative_error(s, t, mask) for s, t in zip(states, trace.states, strict=True))
        loss = sentence + args.hidden_weight * hidden / layers
        log = {"sentence": sentence.item(), "hidden": hidden.item() / layers}
        if documents is not None and step % args.long_every == 0:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                batch = documents.batch(step, args.long_docs, context=args.context_weight > 0)
                long = document_loss(model, batch, args)
            loss = loss + args.long_weight * long
            log["long"] = long.item() * args.long_every  # its mean over the steps that have one
        return loss, log

    keys = ("lr", "mixer_lr", "batch_size", "rel_weight", "hidden_weight", "long_every",
            "long_tokens", "long_docs", "long_weight", "context_weight", "seed",
            "bf16")  # fmt: skip
    return Stage(
        name="distil",
        groups=[
            {"params": mixers, "lr": args.mixer_lr, "weight_decay": 0.01},
            {"params": matrices, "lr": args.lr, "weight_decay": 0.01},
            {"params": others, "lr": args.lr, "weight_decay": 0.0},
        ],
        budget=SimpleNamespace(
            steps=args.steps, cpu_minutes=args.cpu_minutes, wall_minutes=args.wall_minutes
        ),
        settings={k: getattr(args, k) for k in keys},
        batch_loss=batch_loss,
        batch_size=args.batch_size,
        seed=args.seed + 1,
        eval_steps=args.eval_steps,
        patience=args.patience,
    )


def monitor_fn(model: AFTEncoder, seqs: list[list[int]], teacher_vectors: np.ndarray):
    """The monitor: Spearman of student vs teacher cosines over random held-out pairs."""
    from aft.distill.monitor import quick_spearman

    return lambda: quick_spearman(model, seqs, teacher_vectors)


def teacher_vectors(teacher, pooling: str, seqs: list[list[int]]) -> np.ndarray:
    """float32 teacher sentence vectors in full precision (no bf16): the monitor's reference."""
    from aft.convert.texts import teacher_labeller

    label = teacher_labeller(teacher, pooling, bf16=False, batch_size=128)
    return label([np.asarray(s) for s in seqs])
