"""Small parsers for the files the checks read: durations, aft-serve's options, .dockerignore
and Dockerfiles."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .framework import fail

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: str | int | float) -> float:
    """A humantime / Go-style duration ("25s", "1m30s", "500ms", 45) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    compact = value.replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        fail(f"cannot parse duration {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def aft_options(root: Path) -> set[str]:
    """Every AFT_* variable aft-serve reads, from src/config.rs (`env = "AFT_..."`)."""
    text = (root / "src" / "config.rs").read_text()
    names = set(re.findall(r'env\s*=\s*"(AFT_[A-Z0-9_]+)"', text))
    if not names:
        fail("no AFT_* options found in src/config.rs")
    return names


def _glob_regex(pattern: str) -> str:
    rx, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + "[^/]", i + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return rx


def dockerignore_matcher(path: Path) -> Callable[[str], bool]:
    """Returns excluded(relpath) following Docker's rules: patterns in order, the last match wins,
    `!` re-includes, `**` spans directories, a pattern matching a parent folder covers its files."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = (line[1:] if negated else line).strip().strip("/")
        rules.append((re.compile(f"^{_glob_regex(pattern)}$"), negated))

    def excluded(rel: str) -> bool:
        parts = rel.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for rx, negated in rules:
            if any(rx.match(c) for c in candidates):
                result = not negated
        return result

    return excluded


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out
