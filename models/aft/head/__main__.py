"""python -m aft.head train --bundle DIR --data FILE --out DIR [options]

Train a classifier on your own labelled texts (CSV/TSV with a header, or JSON Lines; columns
`text` and `label`) on top of a bundle's encoder, print held-out scores against the majority
baseline, and write a new bundle that aft-serve loads with --model-dir. docs/CLASSIFIERS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from aft.head.data import FORMATS, Columns
from aft.head.errors import HeadError
from aft.head.finetune import FineTuneOptions
from aft.head.train import TrainOptions, train


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return v

    return parse


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return v


def _non_negative(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"must be at least 0, not {text}")
        return v

    return parse


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has a real one (not None or a false switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aft.head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "train",
        help="train a head and write a new bundle",
        description="Train a classification head on labelled texts and write a new bundle.",
        formatter_class=_HelpWithDefaults,
    )
    io = t.add_argument_group("input and output")
    io.add_argument("--bundle", type=Path, required=True, help="base bundle (its encoder)")
    io.add_argument("--data", type=Path, required=True, help="labelled texts: .csv/.tsv/.jsonl")
    io.add_argument("--out", type=Path, required=True, help="directory of the new bundle")
    io.add_argument("--format", choices=FORMATS, help="data format (default: from the suffix)")
    io.add_argument("--text-column", default="text", help="column (JSON key) of the texts")
    io.add_argument("--label-column", default="label", help="column (JSON key) of the labels")
    io.add_argument(
        "--group-column",
        help="rows with the same value here stay on one side of the split (e.g. an author, "
        "a document or a source package)",
    )
    io.add_argument("--name", help="model name in the manifest (default: --out's name)")
    io.add_argument("--description", help="manifest description (default: generated)")
    io.add_argument(
        "--dtype", choices=["float32", "float16"], help="storage type (default: the base's)"
    )
    io.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    io.add_argument("--report", type=Path, help="also write the scores as JSON here")
    io.add_argument("--predictions", type=Path, help="also write held-out predictions (CSV)")

    tr = t.add_argument_group("training")
    tr.add_argument("--test-fraction", type=_fraction, default=0.2, help="share held out")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split and fine-tuning")
    tr.add_argument(
        "--l2",
        type=_non_negative(float),
        help="L2 strength of the head (default: chosen on a validation slice)",
    )
    tr.add_argument(
        "--class-weight",
        choices=["none", "balanced"],
        default="none",
        help="balanced: every label weighs the same in the loss (favours macro-F1)",
    )
    tr.add_argument(
        "--fine-tune", action="store_true", help="also train the encoder end to end (slower)"
    )
    defaults = FineTuneOptions()
    tr.add_argument("--epochs", type=_positive(int), default=defaults.epochs, help="fine-tuning")
    tr.add_argument("--lr", type=_positive(float), default=defaults.lr, help="fine-tuning")
    tr.add_argument(
        "--batch-size", type=_positive(int), default=defaults.batch_size, help="fine-tuning"
    )
    tr.add_argument(
        "--threads", type=_non_negative(int), default=0, help="torch threads (0: all cores)"
    )
    tr.add_argument(
        "--max-batch-tokens",
        type=_positive(int),
        default=8192,
        help="padded tokens per embedding batch",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def options(a: argparse.Namespace, argv: list[str]) -> TrainOptions:
    return TrainOptions(
        bundle=a.bundle,
        data=a.data,
        out=a.out,
        columns=Columns(text=a.text_column, label=a.label_column, group=a.group_column),
        data_format=a.format,
        name=a.name,
        description=a.description,
        test_fraction=a.test_fraction,
        seed=a.seed,
        l2=a.l2,
        class_weight=a.class_weight,
        fine_tune=a.fine_tune,
        fine_tune_options=FineTuneOptions(
            epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed
        ),
        dtype=a.dtype,
        threads=a.threads,
        max_batch_tokens=a.max_batch_tokens,
        overwrite=a.overwrite,
        progress=not a.quiet,
        report_path=a.report,
        predictions_path=a.predictions,
        command="python -m aft.head " + shlex.join(argv),
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    try:
        train(options(a, argv))
    except HeadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file or directory the user named, unreadable or unwritable
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
