"""Distil all-MiniLM-L6-v2 into an AFT encoder, fit the topic head, export the bundle.

The default bundle (after `corpus` and `embed`; all steps: scripts/train-aft-mini):
    python -m aft.distill.train --steps 12000 --batch-size 128 --lr 2e-3 --train-embeddings \
        --head-max 20000 --out ../.work/aft-mini-train \
        --export ../.work/aft-mini-train/bundle/aft-mini
The flags and what a run does with them: aft.distill.options. The pieces: student (shape and
first weights), losses, monitor, bookkeeping (progress, budgets, clocks, checkpoints), loop (the
training loop), topic_head; this module runs them in order and writes the files.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import torch

from aft.distill.loop import distill
from aft.distill.options import parser
from aft.distill.teacher import MAX_SEQ_LEN, write_tokenizer
from aft.distill.topic_head import fit_topic_head
from aft.encoder import AFTEncoder, EncoderConfig
from aft.head.output import with_head


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
    labels, head = fit_topic_head(model, args, log)
    model = with_head(model, len(labels), head)
    torch.save(
        {"config": asdict(model.config), "state_dict": model.state_dict(), "labels": labels},
        args.out / "model.pt",
    )
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    if args.export:
        export(model, labels, args)


def export(model: AFTEncoder, labels: list[str], args) -> None:
    """The float16 bundle at --export, named after its folder."""
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
