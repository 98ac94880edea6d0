"""Checks with declared inputs and outputs, and the runner that orders and reports them.

A check is a function of a `Context`. What it needs from earlier checks (the rendered manifests,
the metric catalog, the staged binary...) and what it hands on are `Key`s it declares; the
context refuses reads and writes it did not declare, so no check can depend on another by run
order alone. A check whose prerequisite failed or was skipped is skipped, with the reason.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

T = TypeVar("T")


class CheckFailed(Exception):
    """The check ran and found a problem."""


class Skipped(Exception):
    """The check cannot run here (a tool or input is missing); not a failure."""


def fail(message: str) -> NoReturn:
    raise CheckFailed(message)


@dataclass(frozen=True, eq=False)
class Key(Generic[T]):
    """A typed product one check hands to the checks that declare they need it."""

    name: str

    def __repr__(self) -> str:
        return f"Key({self.name})"


@dataclass(frozen=True)
class Options:
    """What the command line chose; the same for every check."""

    root: Path
    venv: Path
    binary: Path
    metrics_file: Path | None = None


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], str]  # returns the detail of its PASS line
    needs: tuple[Key[Any], ...] = ()
    provides: tuple[Key[Any], ...] = ()


class Context:
    """What one check sees: the options, its declared inputs, and a place for its outputs and
    for clean-up that must outlive it (processes and folders later checks use)."""

    def __init__(
        self, check: Check, options: Options, products: dict[Key[Any], Any], cleanup: ExitStack
    ) -> None:
        self.options = options
        self.root = options.root
        self._check = check
        self._products = products
        self._cleanup = cleanup
        self.outputs: dict[Key[Any], Any] = {}

    def get(self, key: Key[T]) -> T:
        if key not in self._check.needs:
            raise RuntimeError(f"check {self._check.name} reads {key.name} without declaring it")
        return self._products[key]

    def put(self, key: Key[T], value: T) -> None:
        if key not in self._check.provides:
            raise RuntimeError(f"check {self._check.name} writes {key.name} without declaring it")
        self.outputs[key] = value

    def defer(self, callback: Callable[[], object]) -> None:
        """Run callback when every check is done (last in, first out), pass or fail."""
        self._cleanup.callback(callback)

    def enter(self, manager: AbstractContextManager[T]) -> T:
        """Enter a context manager now and exit it when every check is done."""
        return self._cleanup.enter_context(manager)


@dataclass
class Outcome:
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float = 0.0


def validate(checks: Sequence[Check]) -> None:
    """Names are unique and every key a check needs is provided by a check listed before it."""
    seen: set[str] = set()
    provided: set[Key[Any]] = set()
    for c in checks:
        if c.name in seen:
            raise ValueError(f"two checks named {c.name}")
        seen.add(c.name)
        for key in c.needs:
            if key not in provided:
                raise ValueError(f"{c.name} needs {key.name}, which no earlier check provides")
        provided.update(c.provides)


def select(checks: Sequence[Check], only: Iterable[str] | None) -> list[Check]:
    """The checks named in `only` (all when None) and, transitively, every provider of what
    they need, in registry order."""
    if only is None:
        return list(checks)
    by_name = {c.name: c for c in checks}
    unknown = set(only) - set(by_name)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {', '.join(by_name)}")
    chosen: set[str] = set()
    todo = list(only)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        for key in by_name[name].needs:
            todo += [c.name for c in checks if key in c.provides]
    return [c for c in checks if c.name in chosen]


@dataclass
class Report:
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [n for n, o in self.outcomes.items() if o.status == "FAIL"]


def run_checks(
    checks: Sequence[Check],
    options: Options,
    only: Iterable[str] | None = None,
    emit: Callable[[str], None] = lambda line: print(line, flush=True),
) -> Report:
    """Runs the selected checks in order, one PASS/FAIL/SKIP line each; cleans up at the end."""
    validate(checks)
    selected = select(checks, only)
    products: dict[Key[Any], Any] = {}
    report = Report()
    with ExitStack() as cleanup:
        for check in selected:
            outcome = _skip_reason(check, selected, products, report) or _run_one(
                check, options, products, cleanup
            )
            report.outcomes[check.name] = outcome
            emit(f"{outcome.status} {check.name} ({outcome.seconds:.1f}s): {outcome.detail}")
    return report


def _skip_reason(
    check: Check, selected: Sequence[Check], products: dict[Key[Any], Any], report: Report
) -> Outcome | None:
    missing = [k for k in check.needs if k not in products]
    if not missing:
        return None
    reasons = []
    for key in missing:
        providers = [
            f"{c.name} {report.outcomes[c.name].status}"
            for c in selected
            if key in c.provides and c.name in report.outcomes
        ]
        reasons.append(f"{key.name} ({', '.join(providers) or 'no provider ran'})")
    return Outcome("SKIP", "needs " + "; ".join(reasons))


def _run_one(
    check: Check, options: Options, products: dict[Key[Any], Any], cleanup: ExitStack
) -> Outcome:
    ctx = Context(check, options, products, cleanup)
    t0 = time.monotonic()
    try:
        detail = check.run(ctx)
        status = "PASS"
        unset = [k.name for k in check.provides if k not in ctx.outputs]
        if unset:
            detail, status = f"bug: passed without providing {', '.join(unset)}", "FAIL"
        else:
            products.update(ctx.outputs)  # only a passing check hands anything on
    except Skipped as e:
        detail, status = str(e), "SKIP"
    except CheckFailed as e:
        detail, status = str(e), "FAIL"
    except Exception:  # a bug in the check itself counts as a failure
        detail, status = traceback.format_exc().strip().replace("\n", " | "), "FAIL"
    return Outcome(status, detail, time.monotonic() - t0)
