"""Progress lines on stderr for long steps: quiet for the first seconds, then one line every few
seconds with the rate and the time left, then a summary line."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        stream: TextIO | None = None,
        every: float = 5.0,
        enabled: bool = True,
    ):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.every = every
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._last = self.start
        self.printed = False

    def update(self, n: int, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            pct = 100.0 * self.done / self.total if self.total else 100.0
            extra = f", {note}" if note else ""
            if rate >= 1 or rate == 0:
                speed = f"{rate:.0f} {self.unit}/s"
            else:
                speed = f"{1 / rate:.1f} s per {self.unit.rstrip('s')}"
            self._print(
                f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), "
                f"{speed}, ~{left:.0f} s left{extra}"
            )

    def close(self, note: str = "") -> float:
        """Print the summary line if progress was shown; return the elapsed seconds."""
        elapsed = time.monotonic() - self.start
        if self.printed:
            extra = f", {note}" if note else ""
            self._print(f"{self.what}: {self.done} {self.unit} in {elapsed:.1f} s{extra}")
        return elapsed

    def _print(self, line: str) -> None:
        self.printed = True
        print(line, file=self.stream, flush=True)
