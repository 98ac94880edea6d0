"""Train a classification head on labelled texts and write a complete new bundle.

Steps: read and check the data; split it (stratified, seeded, related rows kept together); embed
every text with the base bundle's encoder; fit a linear head (L2 strength chosen on a validation
slice of the training rows); optionally fine-tune encoder and head end to end; score the held-out
rows against the majority-class baseline; export the encoder with the new head as a bundle the
service loads unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from aft.bundle import load_eager, load_manifest
from aft.head import data as data_mod
from aft.head.data import Columns, Example
from aft.head.embed import embed, load_tokenizer, logits, tokenize
from aft.head.errors import DataError, HeadError
from aft.head.finetune import FineTuneOptions, fine_tune
from aft.head.fit import DEFAULT_L2, choose_l2, class_weights, fit_logistic
from aft.head.metrics import format_comparison, format_table, score
from aft.head.output import check_out_dir, stored_copy, with_head, write_bundle
from aft.head.progress import Progress
from aft.head.split import stratified_group_split

# Every label needs this many training rows before an L2 strength is chosen on a validation
# slice; with fewer, the slice is noise and DEFAULT_L2 is used.
MIN_ROWS_TO_TUNE = 5
CHECK_TEXTS = 16  # held-out texts run through the written bundle to verify it


@dataclass
class TrainOptions:
    bundle: Path
    data: Path
    out: Path
    columns: Columns = field(default_factory=Columns)
    data_format: str | None = None
    name: str | None = None
    description: str | None = None
    test_fraction: float = 0.2
    seed: int = 0
    l2: float | None = None
    class_weight: str = "none"
    fine_tune: bool = False
    fine_tune_options: FineTuneOptions = field(default_factory=FineTuneOptions)
    dtype: str | None = None  # None: the base bundle's
    threads: int = 0  # 0: torch's default
    max_batch_tokens: int = 8192
    overwrite: bool = False
    progress: bool = True
    report_path: Path | None = None
    predictions_path: Path | None = None
    command: str = ""


def log(msg: str = "") -> None:
    print(msg, flush=True)


def train(opts: TrainOptions) -> dict:
    t_start = time.monotonic()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    base_dir, out = Path(opts.bundle), Path(opts.out)
    try:
        base_manifest = load_manifest(base_dir)
    except ValueError as e:
        raise HeadError(f"--bundle {base_dir}: {e}") from None
    dtype = opts.dtype or base_manifest["dtype"]
    name = opts.name or out.resolve().name
    check_out_dir(out, base_dir, opts.overwrite)

    # Data and split.
    examples = data_mod.load_examples(opts.data, opts.columns, opts.data_format)
    labels = data_mod.check_labels(examples, opts.data)
    for first, other in data_mod.conflicting_texts(examples)[:5]:
        log(
            f"warning: {opts.data}:{other.line}: same text as line {first.line} but label "
            f"{other.label!r} (not {first.label!r}); both are kept, on the same side of the split"
        )
    split = stratified_group_split(examples, opts.test_fraction, opts.seed, opts.data)
    label_id = {label: k for k, label in enumerate(labels)}
    y = torch.tensor([label_id[e.label] for e in examples])
    by = f"group column {opts.columns.group!r} and text" if opts.columns.group else "text"
    log(
        f"data: {opts.data}, {len(examples)} rows, {len(labels)} labels; held out "
        f"{len(split.test)} rows for testing, {len(split.train)} to train (stratified, related "
        f"rows by {by} kept together, seed {opts.seed})"
    )

    # Embeddings of every row with the base encoder.
    base = load_eager(base_dir)
    max_len, pad_id = base_manifest["max_seq_len"], base_manifest["pad_token_id"]
    tok = load_tokenizer(base_dir, max_len)
    seqs, truncated = tokenize(tok, [e.text for e in examples])
    if truncated:
        log(
            f"note: {truncated} texts are longer than {max_len} tokens and were cut there "
            f"(as the service does by default)"
        )
    progress = Progress("embedding", len(seqs), "texts", enabled=opts.progress)
    x = embed(base, seqs, pad_id, max_tokens=opts.max_batch_tokens, progress=progress)
    embed_s = progress.close()
    log(f"embedded {len(seqs)} texts with {base_manifest['name']} in {embed_s:.1f} s")

    # The linear head.
    t0 = time.monotonic()
    tr, te = torch.tensor(split.train), torch.tensor(split.test)
    l2, grid = _pick_l2(opts, examples, split.train, x, y, labels)
    weight = class_weights(y[tr], len(labels), opts.class_weight)
    head = fit_logistic(x[tr], y[tr], len(labels), l2, weight)
    stored_head = head.stored_as(getattr(torch, dtype))
    fit_s = time.monotonic() - t0
    probe_test = score(y[te], stored_head.logits(x[te]).argmax(-1), labels)
    train_acc = score(y[tr], stored_head.logits(x[tr]).argmax(-1), labels).accuracy
    log(
        f"head: linear, L2 {l2:g}{grid}, fitted in {fit_s:.1f} s; training accuracy {train_acc:.3f}"
    )

    model = with_head(base, len(labels), head)
    fine_tune_s, losses = 0.0, None
    if opts.fine_tune:
        t0 = time.monotonic()
        losses = fine_tune(
            model,
            [seqs[i] for i in split.train],
            y[tr],
            pad_id,
            opts.fine_tune_options,
            weight,
            show_progress=opts.progress,
        )
        fine_tune_s = time.monotonic() - t0
        served = stored_copy(model, dtype)
        test_logits = logits(served, [seqs[i] for i in split.test], pad_id)
    else:
        test_logits = stored_head.logits(x[te])

    # Scores of the model as stored, against always answering the training set's majority label.
    pred = test_logits.argmax(-1)
    test = score(y[te], pred, labels)
    counts = Counter(y[tr].tolist())
    majority = min(counts, key=lambda k: (-counts[k], k))  # ties: the first label by name
    baseline = score(y[te], torch.full_like(y[te], majority), labels)
    rows = [(f"majority baseline ({labels[majority]})", baseline)]
    if opts.fine_tune:
        rows.append(("linear head only", probe_test))
    rows.append(("fine-tuned" if opts.fine_tune else "this classifier", test))
    table = format_table(test)
    comparison = format_comparison(rows)
    log(f"\nheld-out test set: {len(split.test)} rows\n{table}\n\n{comparison}\n")

    # The bundle.
    report = {
        "data": {
            "file": str(opts.data),
            "sha256": _sha256(Path(opts.data)),
            "rows": len(examples),
            "labels": dict(sorted(Counter(e.label for e in examples).items())),
            "train_rows": len(split.train),
            "test_rows": len(split.test),
            "truncated": truncated,
            "test_fraction": opts.test_fraction,
            "seed": opts.seed,
            "group_column": opts.columns.group,
        },
        "base_bundle": {"name": base_manifest["name"], "path": str(base_dir)},
        "head": {"l2": l2, "class_weight": opts.class_weight, "train_accuracy": train_acc},
        "fine_tune": (
            {**asdict(opts.fine_tune_options), "epoch_losses": losses} if losses else None
        ),
        "test": test.to_dict(),
        "linear_head_test": probe_test.to_dict(),
        "baseline": {"label": labels[majority], **baseline.to_dict()},
        "seconds": {
            "embed": round(embed_s, 1),
            "fit_head": round(fit_s, 1),
            "fine_tune": round(fine_tune_s, 1),
        },
    }
    description = opts.description or (
        f"{base_manifest['name']} encoder with a {len(labels)}-label head trained by aft.head "
        f"on {Path(opts.data).name}"
    )
    card = model_card(name, description, report, table, comparison, opts.command)
    check = [examples[i].text for i in split.test[:CHECK_TEXTS]]
    write_bundle(
        model,
        base_dir,
        out,
        name=name,
        labels=labels,
        dtype=dtype,
        description=description,
        model_card=card,
        check_texts=check,
        overwrite=opts.overwrite,
    )
    total_s = time.monotonic() - t_start
    report["seconds"]["total"] = round(total_s, 1)
    report["bundle"] = {"path": str(out), "name": name, "dtype": dtype, "labels": labels}
    log(
        f"wrote {out} ({name}: {len(labels)} labels, {dtype}) in {total_s:.0f} s in all; "
        f"serve it with: aft-serve --model-dir {out}"
    )
    if opts.report_path:
        _write(opts.report_path, json.dumps(report, indent=2) + "\n")
    if opts.predictions_path:
        _write_predictions(opts.predictions_path, examples, split.test, labels, test_logits)
    return report


def _pick_l2(
    opts: TrainOptions,
    examples: list[Example],
    train_rows: list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    labels: list[str],
) -> tuple[float, str]:
    """--l2 if given, else the grid's best on a validation slice of the training rows."""
    if opts.l2 is not None:
        if opts.l2 < 0:
            raise HeadError(f"--l2 must be at least 0, not {opts.l2}")
        return opts.l2, " (--l2)"
    counts = Counter(examples[i].label for i in train_rows)
    if min(counts.values()) < MIN_ROWS_TO_TUNE:
        return DEFAULT_L2, " (default: too few rows per label to choose one; --l2 sets it)"
    sub = [examples[i] for i in train_rows]
    try:
        inner = stratified_group_split(sub, 0.2, opts.seed, opts.data)
    except DataError:
        return DEFAULT_L2, " (default: the training rows cannot be split to choose one)"
    fit = torch.tensor([train_rows[i] for i in inner.train])
    val = torch.tensor([train_rows[i] for i in inner.test])
    best, tried = choose_l2(x[fit], y[fit], x[val], y[val], labels, opts.class_weight)
    shown = ", ".join(f"{l2:g}: {f1:.3f}" for l2, f1 in tried)
    return best, f" (chosen by validation macro-F1 on {len(val)} training rows: {shown})"


def model_card(
    name: str, description: str, report: dict, table: str, comparison: str, command: str
) -> str:
    d = report["data"]
    ft = report["fine_tune"]
    training = (
        f"linear head (multinomial logistic regression, L2 {report['head']['l2']:g}, class "
        f"weights: {report['head']['class_weight']})"
    )
    if ft:
        training += (
            f", then encoder and head fine-tuned end to end ({ft['epochs']} epochs, learning "
            f"rate {ft['lr']:g}, batch {ft['batch_size']})"
        )
    labels = ", ".join(f"{k} ({v})" for k, v in d["labels"].items())
    cmd = f"\n```sh\n{command}\n```\n" if command else ""
    together = f"a text or a {d['group_column']!r} value" if d["group_column"] else "a text"
    return f"""# {name}

{description}.

Written by `aft.head` on {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}.
{cmd}
- Base encoder: {report["base_bundle"]["name"]}, unchanged{" (then fine-tuned)" if ft else ""}.
- Data: `{Path(d["file"]).name}` (sha256 {d["sha256"][:16]}...), {d["rows"]} rows; labels:
  {labels}.
- Split: {d["test_rows"]} rows held out (fraction {d["test_fraction"]:g}, stratified by label,
  seed {d["seed"]}; rows sharing {together} stay on one side), {d["train_rows"]} to train.
- Training: {training}.

## Held-out evaluation

Scores of this bundle as stored (parameters rounded to its dtype) on the held-out rows:

```
{table}

{comparison}
```

Limits: the scores hold for text like the training data; the held-out rows come from the same
file, so they say nothing about drift or other sources.
"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise HeadError(f"writing {path}: {e.strerror or e}") from None


def _write_predictions(
    path: Path, examples: list[Example], rows: list[int], labels: list[str], z: torch.Tensor
) -> None:
    probs = torch.softmax(z, -1)
    conf, pred = probs.max(-1)
    try:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["line", "label", "predicted", "confidence", "text"])
            for k, i in enumerate(rows):
                e = examples[i]
                w.writerow([e.line, e.label, labels[pred[k]], f"{conf[k]:.4f}", e.text])
    except OSError as e:
        raise HeadError(f"writing {path}: {e.strerror or e}") from None
