"""Fine-tune the encoder and its head end to end (`--fine-tune`).

It starts from the fitted linear head (a linear probe first, then fine-tuning, keeps the first
steps from wrecking the pretrained encoder with a random head's gradients), then runs AdamW with
a linear warm-up and decay over a few epochs of length-bucketed batches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aft.encoder import AFTEncoder
from aft.head.embed import pad
from aft.head.progress import Progress


@dataclass(frozen=True)
class FineTuneOptions:
    epochs: int = 2
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the steps
    seed: int = 0


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within windows of 50 batches, cut,
    shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s : s + window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def fine_tune(
    model: AFTEncoder,
    seqs: list[list[int]],
    y: torch.Tensor,
    pad_id: int,
    opts: FineTuneOptions,
    weight: torch.Tensor | None = None,
    show_progress: bool = True,
) -> list[float]:
    """Train every parameter in place; returns the mean training loss of each epoch."""
    if opts.epochs < 1 or opts.batch_size < 1 or opts.lr <= 0:
        raise ValueError("epochs, batch size and learning rate must be positive")
    rng = random.Random(opts.seed)
    torch.manual_seed(opts.seed)
    lengths = [len(s) for s in seqs]
    per_epoch = (len(seqs) + opts.batch_size - 1) // opts.batch_size
    total = per_epoch * opts.epochs
    warm = max(1, int(opts.warmup * total))
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    progress = Progress("fine-tuning", total, "steps", enabled=show_progress)
    losses = []
    model.train()
    with torch.enable_grad():
        for _ in range(opts.epochs):
            run, n = 0.0, 0
            for batch in bucketed_batches(lengths, opts.batch_size, rng):
                ids, mask = pad([seqs[i] for i in batch], pad_id)
                _, logits = model(ids, mask)
                loss = F.cross_entropy(logits, y[batch], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                run += loss.item() * len(batch)
                n += len(batch)
                progress.update(1, f"loss {run / n:.3f}")
            losses.append(run / n)
    model.eval()
    progress.close(f"final epoch loss {losses[-1]:.3f}")
    return losses
