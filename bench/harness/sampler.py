"""Periodic samples of a running server (RSS, queue depth) on a background thread while a load
run holds the main one."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def sampling(interval_s: float, sample: Callable[[float], dict]) -> Iterator[list[dict]]:
    """Calls sample(seconds since start) at once and then every interval_s, and once more at
    the end; yields the list the samples go into. A sample that raises (say, a scrape that
    timed out under overload) is skipped."""
    samples: list[dict] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def take() -> None:
        with contextlib.suppress(Exception):
            samples.append(sample(round(time.monotonic() - t0, 1)))

    def loop() -> None:
        take()
        while not stop.wait(interval_s):
            take()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        take()
