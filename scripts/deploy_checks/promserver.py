"""A real Prometheus (Debian's `prometheus` package) run for the checks: its own data folder,
127.0.0.1 and a free port, a configuration written for it, and its HTTP API."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .framework import fail

LOG_TAIL = 1500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """One Prometheus process with `config` (a prometheus.yml as a dict). Use as a context
    manager: it is stopped and its folder removed on exit."""

    def __init__(self, binary: str, config: dict[str, Any], ready_timeout: float = 30) -> None:
        self.binary = binary
        self.config = config
        self.ready_timeout = ready_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="aft-prometheus-"))
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
        # The port is free when chosen; another process may take it before Prometheus binds it,
        # so a start that fails to listen is retried on a new one.
        for _ in range(3):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            log = (self.workdir / "prometheus.log").open("wb")
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the checks
            )
            log.close()
            if self._wait_ready():
                return
            if "address already in use" not in self.log_text():
                break
        fail(f"Prometheus did not become ready: {self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        return False

    def log_text(self) -> str:
        try:
            return (self.workdir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return " | ".join(self.log_text()[-LOG_TAIL:].splitlines())

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a GET /api/v1/<path> answer; fails the check on an API error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            fail(f"Prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now: its series ({"metric": labels, "value": [t, "v"]})."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_for(self, expr: str, what: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Polls `expr` until it returns a series; fails with `what` after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                fail(f"{what}: `{expr}` returned nothing within {timeout:g} s")
            time.sleep(0.25)

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class LivePrometheus:
    """A Prometheus scraping a live aft-serve that has served real traffic."""

    prometheus: PrometheusServer
    service_url: str
