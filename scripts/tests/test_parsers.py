from __future__ import annotations

from pathlib import Path

import pytest
from deploy_checks.framework import CheckFailed
from deploy_checks.parsers import dockerfile_instructions, dockerignore_matcher, seconds


@pytest.mark.parametrize(("value", "want"), [("25s", 25), ("1m30s", 90), ("500ms", 0.5), (45, 45)])
def test_seconds(value: str | int, want: float) -> None:
    assert seconds(value) == want


@pytest.mark.parametrize("value", ["", "25", "1x", "5s junk"])
def test_seconds_rejects_what_it_cannot_read(value: str) -> None:
    with pytest.raises(CheckFailed):
        seconds(value)


def test_dockerignore_follows_dockers_rules(tmp_path: Path) -> None:
    p = tmp_path / ".dockerignore"
    p.write_text("*\n!src/\n!a/b.txt\n**/target/\n# c\n")
    excluded = dockerignore_matcher(p)
    assert not excluded("src/main.rs")
    assert excluded("src/x/target/y")  # a later pattern wins over the earlier re-include
    assert excluded("target/release/x")
    assert not excluded("a/b.txt")
    assert excluded("a/c.txt")
    assert excluded(".venv/bin/python")


def test_dockerfile_instructions_join_continuations_and_drop_comments(tmp_path: Path) -> None:
    p = tmp_path / "Dockerfile"
    p.write_text(
        "# syntax note\nFROM a AS b\nRUN one \\\n  # inside\n  && two\nenv X=1\n\nUSER 1:1\n"
    )
    assert dockerfile_instructions(p) == [
        ("FROM", "a AS b"),
        ("RUN", "one    && two"),
        ("ENV", "X=1"),
        ("USER", "1:1"),
    ]
