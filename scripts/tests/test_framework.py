from __future__ import annotations

from pathlib import Path

import pytest
from deploy_checks.framework import (
    Check,
    Context,
    Key,
    Options,
    Skipped,
    fail,
    run_checks,
    select,
    validate,
)

OPTIONS = Options(root=Path("/nonexistent"), venv=Path("/nonexistent"), binary=Path("/x"))
A: Key[int] = Key("a number")
B: Key[str] = Key("a word")


def run(checks: list[Check], only: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    lines: list[str] = []
    report = run_checks(checks, OPTIONS, only, emit=lines.append)
    return {n: o.status for n, o in report.outcomes.items()}, lines


def put(key: Key, value: object, detail: str = "ok"):
    def check(ctx: Context) -> str:
        ctx.put(key, value)
        return detail

    return check


def test_a_check_reads_what_an_earlier_one_provides() -> None:
    seen = []

    def reader(ctx: Context) -> str:
        seen.append(ctx.get(A))
        return "read"

    status, lines = run([Check("make", put(A, 7), provides=(A,)), Check("use", reader, needs=(A,))])
    assert status == {"make": "PASS", "use": "PASS"}
    assert seen == [7]
    assert lines[1].startswith("PASS use (") and lines[1].endswith("): read")


@pytest.mark.parametrize("outcome", ["FAIL", "SKIP"])
def test_dependants_of_a_failed_or_skipped_check_are_skipped_with_the_reason(outcome: str) -> None:
    def producer(ctx: Context) -> str:
        ctx.put(A, 1)  # handed on only by a passing check
        if outcome == "FAIL":
            fail("broken")
        raise Skipped("no tool")

    status, lines = run(
        [
            Check("make", producer, provides=(A,)),
            Check("use", lambda ctx: "ran", needs=(A,)),
            Check("other", lambda ctx: "independent"),
        ]
    )
    assert status == {"make": outcome, "use": "SKIP", "other": "PASS"}
    assert f"needs a number (make {outcome})" in lines[1]


def test_reading_an_undeclared_input_is_a_failure_not_a_silent_dependency() -> None:
    status, lines = run(
        [Check("make", put(A, 1), provides=(A,)), Check("sneaky", lambda ctx: str(ctx.get(A)))]
    )
    assert status["sneaky"] == "FAIL"
    assert "reads a number without declaring it" in lines[1]


def test_writing_an_undeclared_output_fails() -> None:
    status, _ = run([Check("leak", put(B, "x"))])
    assert status == {"leak": "FAIL"}


def test_passing_without_providing_a_declared_output_fails() -> None:
    status, lines = run([Check("lazy", lambda ctx: "done", provides=(A,))])
    assert status == {"lazy": "FAIL"}
    assert "without providing a number" in lines[0]


def test_an_exception_in_a_check_is_a_failure_and_the_run_goes_on() -> None:
    status, lines = run([Check("bug", lambda ctx: str(1 / 0)), Check("next", lambda ctx: "ok")])
    assert status == {"bug": "FAIL", "next": "PASS"}
    assert "ZeroDivisionError" in lines[0]


def test_deferred_clean_up_runs_after_the_last_check_even_on_failure() -> None:
    events = []

    def first(ctx: Context) -> str:
        ctx.defer(lambda: events.append("cleaned"))
        fail("after registering clean-up")

    def second(ctx: Context) -> str:
        events.append("second ran")
        return "ok"

    run([Check("first", first), Check("second", second)])
    assert events == ["second ran", "cleaned"]


def test_only_pulls_in_the_providers_of_what_the_named_checks_need() -> None:
    checks = [
        Check("a", put(A, 1), provides=(A,)),
        Check("b", put(B, "w"), needs=(A,), provides=(B,)),
        Check("c", lambda ctx: "c", needs=(B,)),
        Check("d", lambda ctx: "d"),
    ]
    assert [c.name for c in select(checks, ["c"])] == ["a", "b", "c"]
    assert [c.name for c in select(checks, None)] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="unknown checks"):
        select(checks, ["e"])


def test_a_need_without_an_earlier_provider_is_rejected_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="no earlier check provides"):
        validate(
            [Check("use", lambda ctx: "", needs=(A,)), Check("make", put(A, 1), provides=(A,))]
        )
    with pytest.raises(ValueError, match="two checks"):
        validate([Check("x", lambda ctx: ""), Check("x", lambda ctx: "")])
