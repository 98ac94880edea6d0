"""A seeded, stratified train/test split that keeps related rows together.

Rows are related when they share a group value (the optional group column) or the same text
(case- and space-insensitive): related rows form one component, and a component goes wholly to
train or wholly to test, so no text or group is seen in training and then tested. Components are
visited in a seeded random order and held out while every label they carry stays within its
share of the test set; labels left without a test (or train) row are then repaired by moving the
smallest component that can go.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from aft.head.data import Example
from aft.head.errors import DataError, HeadError


@dataclass(frozen=True)
class Split:
    train: list[int]  # row indices, ascending
    test: list[int]


def components(examples: list[Example]) -> list[list[int]]:
    """Row indices grouped by shared group value or shared text (union-find)."""
    parent = list(range(len(examples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, str], int] = {}
    for i, e in enumerate(examples):
        keys = [("text", " ".join(e.text.lower().split()))]
        if e.group is not None:
            keys.append(("group", e.group))
        for key in keys:
            j = owner.setdefault(key, i)
            parent[find(i)] = find(j)
    comps: dict[int, list[int]] = {}
    for i in range(len(examples)):
        comps.setdefault(find(i), []).append(i)
    return list(comps.values())


def stratified_group_split(examples: list[Example], test_fraction: float, seed: int, path) -> Split:
    if not 0.0 < test_fraction < 1.0:
        raise HeadError(f"--test-fraction must be between 0 and 1, not {test_fraction}")
    comps = components(examples)
    counts = [Counter(examples[i].label for i in c) for c in comps]
    total = Counter(e.label for e in examples)
    comps_with: Counter[str] = Counter(label for c in counts for label in c)

    problems = []
    for label in sorted(total):
        n = total[label]
        if n < 2:
            line = next(e.line for e in examples if e.label == label)
            problems.append(
                f"{path}:{line}: label {label!r} has only this one example; each label needs at "
                f"least 2 (one to train on, one to test) - add examples or drop the label"
            )
        elif comps_with[label] < 2:
            lines = [e.line for e in examples if e.label == label][:5]
            problems.append(
                f"{path}: label {label!r} has {n} examples (lines {', '.join(map(str, lines))}"
                f"{', ...' if n > 5 else ''}) but they share one group or text, so none can be "
                f"held out for testing - add examples from another group"
            )
    if problems:
        raise DataError(problems, path)

    # Each label's share of the test set: at least one row, and at least one left to train.
    target = {lab: min(n - 1, max(1, round(test_fraction * n))) for lab, n in total.items()}
    in_test = [False] * len(comps)
    test_n: Counter[str] = Counter()
    order = list(range(len(comps)))
    random.Random(seed).shuffle(order)
    for k in order:
        if all(test_n[lab] + n <= target[lab] for lab, n in counts[k].items()):
            in_test[k] = True
            test_n.update(counts[k])
    _repair(counts, in_test, total, order)

    test_n = _count(counts, in_test, True)
    train_n = Counter({lab: total[lab] - test_n[lab] for lab in total})
    stuck = sorted(lab for lab in total if test_n[lab] == 0 or train_n[lab] == 0)
    if stuck:
        raise DataError(
            [
                f"{path}: label {lab!r} cannot be split: its groups also carry other labels "
                f"that would lose all their {'test' if test_n[lab] == 0 else 'training'} rows"
                for lab in stuck
            ],
            path,
        )
    test = sorted(i for k, c in enumerate(comps) if in_test[k] for i in c)
    train = sorted(i for k, c in enumerate(comps) if not in_test[k] for i in c)
    return Split(train=train, test=test)


def _count(counts: list[Counter], in_test: list[bool], side: bool) -> Counter:
    out: Counter[str] = Counter()
    for k, c in enumerate(counts):
        if in_test[k] == side:
            out.update(c)
    return out


def _repair(counts: list[Counter], in_test: list[bool], total: Counter, order: list[int]) -> None:
    """Move the smallest component that fixes a label with no test (or no train) rows, if the
    move empties no other label's side."""
    for side in (True, False):  # first give every label a test row, then a training row
        for label in sorted(total):
            here = _count(counts, in_test, side)
            if here[label] > 0:
                continue
            there = _count(counts, in_test, not side)
            candidates = sorted(
                (k for k in order if in_test[k] != side and label in counts[k]),
                key=lambda k: sum(counts[k].values()),
            )
            for k in candidates:
                if all(there[lab] - n > 0 for lab, n in counts[k].items()):
                    in_test[k] = side
                    break
