"""The load generator: bounded oha runs against 127.0.0.1, their summary, and one measured point
(oha plus the server's /metrics, CPU and memory around it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from functools import cache
from pathlib import Path

from harness import metrics
from harness.serve_process import ServeProcess

EMBED = "/v1/embed"
# oha's error text for requests still in flight when the -z window closes: not an error.
DEADLINE_ABORT = "aborted due to deadline"
# Past its -z window plus the request timeout, an oha run has hung: stop it.
HANG_GRACE_S = 30.0


@cache
def oha_path() -> str:
    path = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
    if not Path(path).exists():
        raise SystemExit("oha not found: bench/run-all installs it (cargo install oha --locked)")
    return path


@cache
def _json_flag() -> tuple[str, ...]:
    """Newer oha spells JSON output --output-format json, older ones -j."""
    help_text = subprocess.run([oha_path(), "--help"], capture_output=True, text=True).stdout
    return ("--output-format", "json") if "--output-format" in help_text else ("-j",)


def version() -> str:
    return subprocess.run([oha_path(), "--version"], capture_output=True, text=True).stdout.strip()


def run(
    url: str,
    bodies: Path,
    seconds: float,
    connections: int,
    rate: float | None = None,
    latency_correction: bool = True,
    timeout_s: float = 60.0,
) -> dict:
    """One oha run: closed loop over `connections`, or open loop at `rate` req/s. Returns oha's
    JSON plus the client's CPU seconds (`_client_cpu_s`) and wall time (`_wall_s`)."""
    cmd = [oha_path(), "--no-tui", *_json_flag(), "-z", f"{seconds}s", "-c", str(connections)]
    cmd += ["-m", "POST", "-T", "application/json", "-Z", str(bodies), "-t", f"{timeout_s}s"]
    if rate:
        cmd += ["-q", f"{rate:.2f}"]
        if latency_correction:
            cmd.append("--latency-correction")
    cmd += ["--stats-success-breakdown", url]
    # Output goes to files, not pipes: wait4 (for the client's CPU time) reaps oha before
    # anything is read, and a full pipe would block oha before it could exit.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        watchdog = threading.Timer(seconds + timeout_s + HANG_GRACE_S, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait again
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"oha exited with {proc.returncode}: {stderr[-2000:]}")
    data = json.loads(stdout)
    data["_client_cpu_s"] = usage.ru_utime + usage.ru_stime
    data["_wall_s"] = wall
    return data


def summarize(o: dict, seconds: float) -> dict:
    """Status codes, errors (non-200 plus transport errors; deadline cut-offs apart) and
    latency percentiles of the successful requests, in ms."""
    codes = {str(k): int(v) for k, v in o.get("statusCodeDistribution", {}).items()}
    errors = {k: int(v) for k, v in o.get("errorDistribution", {}).items()}
    ok = codes.get("200", 0)
    aborted = errors.pop(DEADLINE_ABORT, 0)
    lat = o.get("latencyPercentilesSuccessful") or {}
    rejected = o.get("latencyPercentilesNotSuccessful") or {}

    def ms(key: str, table: dict = lat) -> float | None:
        v = table.get(key)
        return None if v is None else 1e3 * v

    return {
        "ok": ok,
        "ok_per_s": ok / seconds,
        "status_codes": codes,
        "transport_errors": errors,
        "aborted_at_deadline": aborted,
        "errors": sum(v for k, v in codes.items() if k != "200") + sum(errors.values()),
        "errors_5xx": sum(v for k, v in codes.items() if k.startswith("5")),
        "p50_ms": ms("p50"),
        "p90_ms": ms("p90"),
        "p99_ms": ms("p99"),
        "p999_ms": ms("p99.9"),
        "rejected_p50_ms": ms("p50", rejected),
        "rejected_p99_ms": ms("p99", rejected),
        "mean_ms": 1e3 * (o.get("summary", {}).get("average") or 0.0),
        "client_cpu_s": o["_client_cpu_s"],
        "client_cpu_s_per_s": o["_client_cpu_s"] / seconds,
    }


def warm_up(srv: ServeProcess, bodies: Path, seconds: float) -> None:
    """A discarded closed-loop run at c=16 (caches, allocator, thread pools)."""
    run(srv.url + EMBED, bodies, seconds, 16)


def measure(
    srv: ServeProcess,
    bodies: Path,
    seconds: float,
    connections: int,
    rate: float | None = None,
    latency_correction: bool = True,
    path: str = EMBED,
) -> dict:
    """One point: oha's summary plus the server's /metrics deltas, CPU and RSS; `path`: the
    embeddings route of a server other than aft-serve."""
    m0, c0 = metrics.scrape(srv.url), srv.cpu_seconds()
    o = run(srv.url + path, bodies, seconds, connections, rate, latency_correction)
    m1, c1 = metrics.scrape(srv.url), srv.cpu_seconds()
    res = summarize(o, seconds)
    res.update(metrics.delta(m0, m1, seconds))
    # Every body carries one text, so sentences/s = 200s/s. (The server's input counter also
    # counts requests still in flight when oha's window closes, so it reads high.)
    res["sentences_per_s"] = res["ok_per_s"]
    res["server_inputs_per_s"] = res["inputs"] / seconds if res.get("inputs") else None
    per_input = res["prompt_tokens"] / res["inputs"] if res.get("inputs") else None
    res["tokens_per_s"] = per_input * res["ok_per_s"] if per_input else None
    res["server_cpu_s_per_s"] = (c1 - c0) / seconds
    res["concurrency"], res["rate"], res["seconds"] = connections, rate, seconds
    res["rss_kib"] = srv.rss_bytes() // 1024
    return res


def fmt_point(r: dict) -> str:
    """One line for the progress log."""
    mb = r.get("mean_batch_size")
    return (
        f"{r['ok_per_s']:7.1f} req/s  p50 {r['p50_ms'] or 0:8.2f}  p90 {r['p90_ms'] or 0:8.2f}  "
        f"p99 {r['p99_ms'] or 0:8.2f} ms  err {r['errors']}  "
        f"batch {'-' if mb is None else round(mb, 1)}  "
        f"cpu srv {r.get('server_cpu_s_per_s', 0):.2f} cli {r['client_cpu_s_per_s']:.2f}"
    )
