"""The servers under test, each started on 127.0.0.1 and a free port through harness.serve_process:
aft-serve (the release build) and the two Python peers in bench/peers/."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from harness import BENCH, PYTHON, corpus, log
from harness.serve_process import DEFAULT_BINARY, ServeProcess

KINDS = ("aft-serve", "python-plain", "python-batched")
PEER_SCRIPTS = {"python-plain": "plain_server.py", "python-batched": "batched_server.py"}
# The batching peer's limits, passed explicitly so that the results record what ran.
BATCHED_PEER_LIMITS = {"max_batch_size": 64, "max_batch_tokens": 8192}
READY_TIMEOUT_S = 180.0
_started = itertools.count(1)


def peer_threads() -> int:
    """torch intra-op threads of each peer: every CPU, as aft-serve's default (1 worker, intra-op
    threads = CPUs / workers)."""
    return os.cpu_count() or 1


def command(kind: str, model_dir: Path, args: list[str]) -> tuple[list[str] | None, list[str]]:
    """(program, arguments) for ServeProcess; program None is the aft-serve release binary."""
    if kind == "aft-serve":
        # warn: an info log line per request would cost the server CPU under load.
        return None, ["--model-dir", str(model_dir), "--log-level", "warn", *args]
    script = BENCH / "peers" / PEER_SCRIPTS[kind]
    peer_args = ["--model-dir", str(model_dir), "--threads", str(peer_threads())]
    if kind == "python-batched":
        for name, value in BATCHED_PEER_LIMITS.items():
            peer_args += [f"--{name.replace('_', '-')}", str(value)]
    return [PYTHON, str(script)], [*peer_args, *args]


@contextlib.contextmanager
def started(
    kind: str,
    model_dir: Path,
    log_dir: Path,
    args: list[str] | None = None,
    binary: Path | None = None,
) -> Iterator[ServeProcess]:
    """One server, ready and primed with a few large batches; stopped (SIGTERM) on exit.
    `binary`: another aft-serve build than the release binary (A/B of two builds)."""
    program, argv = command(kind, model_dir, args or [])
    if binary is not None:
        program = [str(binary)]
    log_path = log_dir / f"{next(_started):02d}-{kind}.log"
    srv = ServeProcess(
        args=argv,
        command=program,
        log_path=log_path,
        ready_timeout=READY_TIMEOUT_S,
    )
    log(f"start {kind}: {' '.join(srv.argv)}")
    with srv:
        prime(srv)
        yield srv


def prime(srv: ServeProcess) -> None:
    """Three requests of 32 corpus texts each: first-call costs (lazy init, allocator) out of
    the way before any measurement."""
    body = json.dumps({"inputs": corpus.texts(32)}).encode()
    for _ in range(3):
        req = urllib.request.Request(
            srv.url + "/v1/embed", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()


def binary() -> Path:
    return DEFAULT_BINARY
