"""Accuracy, macro-F1 and a per-label table (precision, recall, F1, support), and the report
that compares a classifier with the majority-class baseline."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class LabelScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    per_label: list[LabelScore]
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def score(y_true: torch.Tensor, y_pred: torch.Tensor, labels: list[str]) -> Scores:
    """Macro-F1 averages over every label with test rows; a label never predicted has
    precision 0."""
    y_true, y_pred = y_true.long(), y_pred.long()
    per = []
    for k, name in enumerate(labels):
        tp = int(((y_pred == k) & (y_true == k)).sum())
        predicted = int((y_pred == k).sum())
        support = int((y_true == k).sum())
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per.append(LabelScore(name, p, r, f, support))
    present = [s for s in per if s.support > 0]
    n = len(y_true)
    return Scores(
        accuracy=float((y_true == y_pred).float().mean()) if n else 0.0,
        macro_f1=sum(s.f1 for s in present) / len(present) if present else 0.0,
        per_label=per,
        n=n,
    )


def format_table(scores: Scores) -> str:
    width = max(12, *(len(s.label) for s in scores.per_label))
    rows = [f"{'label':<{width}}  precision  recall     f1  support"]
    for s in scores.per_label:
        rows.append(
            f"{s.label:<{width}}  {s.precision:9.3f}  {s.recall:6.3f}  {s.f1:5.3f}  {s.support:7d}"
        )
    rows.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {scores.accuracy:5.3f}  {scores.n:7d}")
    rows.append(f"{'macro avg':<{width}}  {'':9}  {'':6}  {scores.macro_f1:5.3f}  {scores.n:7d}")
    return "\n".join(rows)


def format_comparison(rows: list[tuple[str, Scores]]) -> str:
    width = max(len(name) for name, _ in rows)
    out = [f"{'':<{width}}  accuracy  macro-F1"]
    for name, s in rows:
        out.append(f"{name:<{width}}  {s.accuracy:8.3f}  {s.macro_f1:8.3f}")
    return "\n".join(out)
