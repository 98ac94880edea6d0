"""The servers under test, each started on 127.0.0.1 and a free port through harness.serve_process:
aft-serve (the release build), the two Python peers in bench/peers/, and infinity (the Python
embedding server, installed by bench/peers/install-infinity) serving a sentence-transformers
folder."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import BENCH, PYTHON, ROOT, corpus, log
from harness.load import EMBED
from harness.serve_process import DEFAULT_BINARY, READY_PATH, ServeProcess

# The kinds the compare part runs; "infinity" (bench/against_infinity.py) is started on request.
KINDS = ("aft-serve", "python-plain", "python-batched")
INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", ROOT / ".work" / "infinity-venv"))
INFINITY_MODEL = "all-MiniLM-L6-v2"  # the name it serves the folder under, which requests name
# The model is a local folder and no hub is reachable: offline, no telemetry.
INFINITY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
}
PEER_SCRIPTS = {"python-plain": "plain_server.py", "python-batched": "batched_server.py"}
# The batching peer's limits, passed explicitly so that the results record what ran.
BATCHED_PEER_LIMITS = {"max_batch_size": 64, "max_batch_tokens": 8192}
READY_TIMEOUT_S = 180.0
_started = itertools.count(1)


@dataclass(frozen=True)
class Api:
    """How a kind of server is asked for embeddings and when it is ready; the Python peers speak
    aft-serve's."""

    embed: str = EMBED
    ready: str = READY_PATH
    openai_model: str | None = None  # OpenAI-style bodies naming this model (corpus.request_body)


APIS = {"infinity": Api("/embeddings", "/health", INFINITY_MODEL)}


def api(kind: str) -> Api:
    return APIS.get(kind, Api())


def peer_threads() -> int:
    """torch intra-op threads of each peer: every CPU, as aft-serve's default (1 worker, intra-op
    threads = CPUs / workers)."""
    return os.cpu_count() or 1


def command(kind: str, model_dir: Path, args: list[str]) -> tuple[list[str] | None, list[str]]:
    """(program, arguments) for ServeProcess; program None is the aft-serve release binary."""
    if kind == "aft-serve":
        # warn: an info log line per request would cost the server CPU under load.
        return None, ["--model-dir", str(model_dir), "--log-level", "warn", *args]
    if kind == "infinity":
        # Its defaults otherwise (batch size 32, every CPU); warning: no access log under load.
        program = [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2"]
        infinity_args = ["--model-id", str(model_dir), "--served-model-name", INFINITY_MODEL]
        infinity_args += ["--engine", "torch", "--device", "cpu", "--log-level", "warning"]
        return program, [*infinity_args, *args]
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
    # infinity makes a cache folder under INFINITY_HOME (else in its working directory, the repo).
    env = {**INFINITY_ENV, "INFINITY_HOME": str(log_dir)} if kind == "infinity" else None
    srv = ServeProcess(
        args=argv,
        command=program,
        env=env,
        log_path=log_path,
        ready_timeout=READY_TIMEOUT_S,
        ready_path=api(kind).ready,
    )
    log(f"start {kind}: {' '.join(srv.argv)}")
    with srv:
        prime(srv, api(kind))
        yield srv


def prime(srv: ServeProcess, server_api: Api) -> None:
    """Three requests of 32 corpus texts each: first-call costs (lazy init, allocator) out of
    the way before any measurement."""
    body = json.dumps(corpus.request_body(corpus.texts(32), server_api.openai_model)).encode()
    for _ in range(3):
        req = urllib.request.Request(
            srv.url + server_api.embed, data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()


def binary() -> Path:
    return DEFAULT_BINARY
