"""Start and stop an aft-serve process: the one Python way, for tests, benchmarks and checks.

    with ServeProcess(args=["--model-dir", "models/aft-mini"]) as srv:
        urllib.request.urlopen(srv.url + "/health/ready")

The server listens on 127.0.0.1 and a free port unless `args` (or `env`) choose the address. Its
output goes to a file, never to a pipe nobody reads (a full pipe would stall the server). Only
the standard library is used, so this works wherever the harness is importable (scripts/setup
installs it: bench/pyproject.toml).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "target" / "release" / "aft-serve"
READY_PATH = "/health/ready"
LOG_TAIL_CHARS = 4000

# aft-serve logs `listening on 127.0.0.1:PORT` (human and JSON formats alike).
_LISTENING = re.compile(r"listening on (\[[0-9A-Fa-f:.]+\]:\d+|[0-9.]+:\d+)")
_TCP_LISTEN = "0A"  # socket state LISTEN in /proc/net/tcp


class ServeError(RuntimeError):
    """The server exited early or did not become ready; the message ends with its log tail."""


class ServeProcess:
    """One aft-serve process (or another server with the same --host/--port flags and a
    /health/ready route), from start until ready, and its orderly stop.

    args: command-line arguments; `--host 127.0.0.1` and `--port 0` are added unless args or
        env (AFT_HOST, AFT_PORT) set them.
    binary: the executable; defaults to <repo>/target/release/aft-serve.
    command: the program and its leading arguments, in place of `binary` (e.g. a Python peer
        server: [python, "bench/peers/plain_server.py"]).
    env: variables set on top of this process's environment.
    own_aft_env: False to leave out this process's AFT_* variables, so that only args and env
        configure the server (a benchmark of the defaults).
    log_path: where stdout and stderr go; by default a temporary file, read into memory and
        removed at stop (log_text() still works afterwards).
    ready_timeout: seconds to wait for GET /health/ready to answer 200.
    ready_path: the route that answers 200 once the server is ready (another server's: /health).
    cwd: working directory of the server; defaults to the repository root (so relative model
        directories such as models/aft-mini resolve).
    """

    def __init__(
        self,
        args: Sequence[str | os.PathLike] = (),
        binary: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike | None = None,
        ready_timeout: float = 120.0,
        *,
        command: Sequence[str | os.PathLike] | None = None,
        cwd: str | os.PathLike | None = None,
        own_aft_env: bool = True,
        ready_path: str = READY_PATH,
    ) -> None:
        if command is not None and binary is not None:
            raise ValueError("give either binary or command, not both")
        program = [str(c) for c in command] if command else [str(binary or DEFAULT_BINARY)]
        if not Path(program[0]).exists() and os.sep in program[0]:
            hint = " (build it: cargo build --release --locked)" if binary is None else ""
            raise FileNotFoundError(f"{program[0]} does not exist{hint}")
        self.env = dict(env or {})
        self.own_aft_env = own_aft_env
        argv = [str(a) for a in args]
        self._host = _flag_value(argv, "--host") or self.env.get("AFT_HOST")
        port = _flag_value(argv, "--port") or self.env.get("AFT_PORT")
        extra = []
        if self._host is None:
            self._host = "127.0.0.1"
            extra += ["--host", self._host]
        if port is None:
            extra += ["--port", "0"]
        self._port = int(port) if port and int(port) != 0 else None
        self.argv = [*program, *argv, *extra]
        self.ready_timeout = ready_timeout
        self.ready_path = ready_path
        self.cwd = Path(cwd) if cwd else REPO_ROOT
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else None
        self._log_cache: str | None = None
        self._proc: subprocess.Popen | None = None
        self.url = ""

    # ------------------------------------------------------------------ life cycle

    def start(self) -> ServeProcess:
        """Start the process and wait until it is ready; raises ServeError (after stopping it)
        if it exits first or is not ready within ready_timeout."""
        if self._proc is not None:
            raise RuntimeError("already started")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="aft-serve-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # The child keeps its own copy of the descriptor; ours can close at once.
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**self._inherited_env(), **self.env},
                # Its own process group: a terminal's Ctrl-C reaches only us, and stop() decides.
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to `timeout` seconds (SIGKILL after that), return the exit code
        (negative: the signal that ended it). Calling it again returns the same code."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("not started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_log and self._log_cache is None and self.log_path is not None:
            self._log_cache = self._read_log()
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        return proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ facts

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self._proc is None else self._proc.poll()

    def rss_bytes(self) -> int:
        """Resident set size now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, all threads (Linux /proc)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        """Everything the process has written to stdout and stderr so far."""
        return self._log_cache if self._log_cache is not None else self._read_log()

    # ------------------------------------------------------------------ internals

    def _inherited_env(self) -> dict[str, str]:
        if self.own_aft_env:
            return dict(os.environ)
        return {k: v for k, v in os.environ.items() if not k.startswith("AFT_")}

    def _read_log(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, what: str) -> ServeError:
        tail = self.log_text()[-LOG_TAIL_CHARS:]
        return ServeError(f"{' '.join(self.argv)}: {what}; log {self.log_path} ends:\n{tail}")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"exited with code {code} before it was ready")
            if not self.url:
                self.url = self._find_url()
            if self.url and _answers_ok(self.url + self.ready_path):
                return
            if time.monotonic() > deadline:
                where = self.url or "no listening address yet"
                raise self._fail(f"not ready after {self.ready_timeout:g} s ({where})")
            time.sleep(0.1)

    def _find_url(self) -> str:
        """The base URL once the server listens: the port given, else the one it logs, else
        (when the log filter hides that line) its listening socket from /proc."""
        host = _client_host(self._host or "127.0.0.1")
        if self._port is not None:
            return f"http://{host}:{self._port}"
        m = _LISTENING.search(self._read_log())
        if m:
            addr_host, _, port = m.group(1).rpartition(":")
            return f"http://{_client_host(addr_host.strip('[]'))}:{port}"
        port = _listening_port(self.pid)
        return f"http://{host}:{port}" if port else ""


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of `--flag V` or `--flag=V` in argv (the last one wins, as with clap)."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def _client_host(host: str) -> str:
    """Where a client on this machine connects to reach a server bound to `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


def _listening_port(pid: int) -> int | None:
    """The port of a TCP socket that process `pid` listens on (Linux /proc), else None."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # descriptors come and go while we look
                inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == _TCP_LISTEN and f"socket:[{f[9]}]" in inodes:
                return int(f[1].rsplit(":", 1)[1], 16)
    return None
