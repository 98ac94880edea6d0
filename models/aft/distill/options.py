"""Distil all-MiniLM-L6-v2 into an AFT encoder, fit the topic head, export the bundle.

The command line of `python -m aft.distill.train`, and what a run does with it.
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
(`aft.distill.documents`, `aft.distill.losses.context_loss`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aft.distill.student import SHAPE
from aft.encoder import VARIANTS


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
