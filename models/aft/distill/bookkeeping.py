"""A training run's bookkeeping: where it is (`Progress`), how far along its budgets
(`fraction_done`, `lr_factor`), the time it has spent (`Clock`), signals that ask it to stop
(`Stopper`), and the checkpoint that lets `--resume` continue it."""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# Arguments that must match for --resume to continue the same run. The budgets (--steps,
# --cpu-minutes, --wall-minutes) may change: the schedule is then stretched from where it is.
RUN_KEYS = ("variant", "batch_size", "lr", "rel_weight", "train_embeddings", "seed",
            "exclude_source", "bf16", "no_teacher_init", "grow", "max_train", "init_from",
            "max_seq_len", "long_every", "long_tokens", "long_docs", "long_weight",
            "context_weight")  # fmt: skip
BUDGET_KEYS = ("steps", "cpu_minutes", "wall_minutes")


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


def lr_factor(p: float) -> float:
    """Linear warm-up over the first 5% of the run, then cosine decay to 5% of the peak."""
    if p < 0.05:
        return max(0.02, p / 0.05)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (p - 0.05) / 0.95)))


def fraction_done(args, pr: Progress) -> float:
    """Fraction of the run done: the furthest of steps, CPU budget and wall budget."""
    p = [pr.step / args.steps] if args.steps else []
    if args.cpu_minutes:  # CPU time hardly depends on other jobs: fair on shared cores
        p.append(pr.cpu_s / (args.cpu_minutes * 60.0))
    if args.wall_minutes:  # a hard deadline
        p.append(pr.wall_s / (args.wall_minutes * 60.0))
    return max(p)


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


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint `save_checkpoint` wrote at `path`, or None if there is none."""
    return torch.load(path, weights_only=False) if path.exists() else None


def check_resume(ck: dict, run: dict, budget: dict, default: Callable[[str], Any]) -> None:
    """Refuse to resume a different run; say so when the budget changed. An argument added
    after the checkpoint was written had its `default` then."""
    saved = {k: ck["run"].get(k, default(k)) for k in run}
    diff = {k: (saved[k], v) for k, v in run.items() if saved[k] != v}
    if diff:
        raise SystemExit(f"--resume: arguments differ from the checkpoint's: {diff}")
    change = {k: (ck["budget"][k], v) for k, v in budget.items() if ck["budget"][k] != v}
    if change:
        print(f"--resume with a new budget {change}: the learning rate follows the new "
              "schedule from here", flush=True)  # fmt: skip


def restore_rng(ck: dict) -> None:
    """The random generators as the checkpointed run left them."""
    torch.set_rng_state(ck["rng"]["torch"])
    random.setstate(ck["rng"]["python"])
