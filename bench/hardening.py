"""Hostile-load and memory checks of aft-serve (issue 13): a flood of idle half-open connections,
an open-loop load then idle, and a long soak; resident memory (VmRSS) throughout.

    python bench/hardening.py flood [--connections 20000] [--hold 20] [--idle 60] [SERVER FLAGS]
    python bench/hardening.py capacity [--seconds 20]                   # closed loop, c=64
    python bench/hardening.py load (--rate 800 | --capacity REQ_S [--fraction 0.9])
                                   [--seconds 60] [--idle 60]
    python bench/hardening.py soak [--capacity REQ_S] [--seconds 600]    # 70% of capacity
    common: --binary PATH (default target/release/aft-serve), --model-dir DIR (models/aft-mini),
            --out FILE.json, --server-env KEY=VALUE (the server's environment only, e.g.
            LD_PRELOAD=libjemalloc.so.2 to try another allocator without rebuilding);
            anything after `--` goes to aft-serve as flags.

flood: opens --connections TCP connections to 127.0.0.1 (from several client processes, so the
client's own file limit is no bound), each sending half a request header and nothing more, then
holds them --hold seconds, then closes them and leaves the server idle --idle seconds. Samples
every second: server RSS, its open sockets, how many of the client's connections the server has
closed, and the latency of GET /health/ready on a fresh connection (the service must keep
answering). The server needs a file limit above the connections it is to hold (`ulimit -n`).

capacity: what the server serves in a closed loop of 64 connections for --seconds (20 s), the
capacity that `load --capacity` and `soak --capacity` take.

load: an open-loop run (oha, the bench corpus) at --rate (or --fraction of --capacity), then
--idle seconds of nothing; RSS before, at the end of the run and after the idle time.

soak: open loop at 70% of --capacity (measured with a 20 s closed-loop run at c=64 when not
given) for --seconds; RSS every 10 s; passes when RSS at the end is within 10% of RSS after
the first 2 minutes.

Every RSS sample also gives its anonymous part (RssAnon: the heaps, what an allocator can give
back) apart from file-backed pages (the libraries' code, the mapped model).

Only ever against 127.0.0.1; every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import ROOT, corpus, load, log
from harness.results import cpu
from harness.sampler import sampling
from harness.serve_process import ServeProcess

HALF_HEADER = b"POST /v1/embed HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: applic"
PER_CLIENT = 5000  # connections per client process
OPEN_RATE = 4000  # new connections per second, all clients together
SOAK_FRACTION = 0.7
SOAK_WARMUP_S = 120
SOAK_TOLERANCE = 0.10
CAPACITY_CONNECTIONS = 64
CAPACITY_SECONDS = 20.0


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ---------------------------------------------------------------------------------- flood client


def _flood_client(port: int, n: int, rate: float, hold_s: float, out: mp.Queue) -> None:
    raise_nofile()
    out.put(asyncio.run(_flood(port, n, rate, hold_s)))


async def _flood(port: int, n: int, rate: float, hold_s: float) -> dict:
    t0 = time.monotonic()
    closed_at: list[float] = []
    opened, refused = 0, 0
    writers = []

    async def watch(reader: asyncio.StreamReader) -> None:
        try:
            await reader.read(1)  # the server sends nothing: this ends when it closes
        except OSError:
            pass
        closed_at.append(time.monotonic() - t0)

    tasks = []
    for i in range(n):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(HALF_HEADER)
            await writer.drain()
        except OSError:
            refused += 1
            continue
        opened += 1
        writers.append(writer)
        tasks.append(asyncio.create_task(watch(reader)))
        # Pace the opening: at most `rate` per second from this client.
        lag = (i + 1) / rate - (time.monotonic() - t0)
        if lag > 0:
            await asyncio.sleep(lag)
    opened_s = time.monotonic() - t0
    await asyncio.sleep(max(0.0, hold_s - opened_s))
    still_open = sum(1 for t in tasks if not t.done())
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "opened": opened,
        "failed_to_open": refused,
        "opening_s": round(opened_s, 1),
        "closed_by_server": len(closed_at),
        "still_open_at_end": still_open,
        "closed_at_s": sorted(round(t, 2) for t in closed_at),
    }


def open_sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def ready_ms(url: str) -> float | None:
    t = time.monotonic()
    try:
        with urllib.request.urlopen(url + "/health/ready", timeout=5) as r:
            r.read()
            return round((time.monotonic() - t) * 1000, 2) if r.status == 200 else None
    except OSError:
        return None


def rss_kib(srv: ServeProcess) -> int:
    return srv.rss_bytes() // 1024


def anon_kib(srv: ServeProcess) -> int:
    """RssAnon: resident anonymous memory (heaps, stacks), without file-backed pages."""
    for line in Path(f"/proc/{srv.pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError(f"no RssAnon for process {srv.pid}")


def mem(srv: ServeProcess, t: float) -> dict:
    return {"t": t, "rss_kib": rss_kib(srv), "anon_kib": anon_kib(srv)}


def flood(srv: ServeProcess, a: argparse.Namespace) -> dict:
    port = int(srv.url.rsplit(":", 1)[1])
    clients = max(1, -(-a.connections // PER_CLIENT))
    per = [a.connections // clients + (i < a.connections % clients) for i in range(clients)]
    out: dict = {"connections": a.connections, "hold_s": a.hold, "idle_s": a.idle}
    out["rss_before_kib"] = rss_kib(srv)
    out["anon_before_kib"] = anon_kib(srv)
    log(f"flood: {a.connections} half-open connections from {clients} clients, hold {a.hold} s")
    q: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_flood_client, args=(port, n, OPEN_RATE / clients, a.hold, q))
        for n in per
    ]

    def sample(t: float) -> dict:
        return {
            **mem(srv, t),
            "sockets": open_sockets(srv.pid),
            "ready_ms": ready_ms(srv.url),
        }

    with sampling(1.0, sample) as during:
        for p in procs:
            p.start()
        results = [q.get(timeout=a.hold + 600) for _ in procs]
        for p in procs:
            p.join()
    out["during"] = during
    out["rss_peak_kib"] = max(s["rss_kib"] for s in during)
    out["ready_failures"] = sum(1 for s in during if s["ready_ms"] is None)
    out["ready_ms_max"] = max((s["ready_ms"] or 0) for s in during)
    closed = sorted(t for r in results for t in r.pop("closed_at_s"))
    out["clients"] = results
    for key in ("opened", "failed_to_open", "closed_by_server", "still_open_at_end"):
        out[key] = sum(r[key] for r in results)
    out["closed_by_server_s"] = {
        "first": closed[0] if closed else None,
        "median": closed[len(closed) // 2] if closed else None,
        "last": closed[-1] if closed else None,
    }
    out["rss_after_flood_kib"] = rss_kib(srv)
    log(
        f"flood: opened {out['opened']}, closed by the server {out['closed_by_server']}, "
        f"still open at the end {out['still_open_at_end']}; RSS {out['rss_before_kib']} -> "
        f"peak {out['rss_peak_kib']} KiB; /health/ready failures {out['ready_failures']}, "
        f"max {out['ready_ms_max']} ms"
    )
    idle(srv, a.idle, out)
    return out


def idle(srv: ServeProcess, seconds: float, out: dict) -> None:
    with sampling(5.0, lambda t: mem(srv, t)) as s:
        time.sleep(seconds)
    out["idle_samples"] = s
    out["rss_after_idle_kib"] = rss_kib(srv)
    out["anon_after_idle_kib"] = anon_kib(srv)
    log(
        f"after {seconds:g} s idle: RSS {out['rss_after_idle_kib']} KiB "
        f"(anonymous {out['anon_after_idle_kib']} KiB)"
    )


def bodies() -> Path:
    return corpus.body_files(Path(tempfile.mkdtemp(prefix="aft-hardening-")))["mixed"]


def capacity(srv: ServeProcess, a: argparse.Namespace) -> dict:
    r = load.measure(srv, bodies(), a.seconds, CAPACITY_CONNECTIONS)
    log(f"capacity (closed loop, c={CAPACITY_CONNECTIONS}, {a.seconds:g} s): {load.fmt_point(r)}")
    return {"capacity_req_s": r["ok_per_s"], "seconds": a.seconds, "result": r}


def open_loop(srv: ServeProcess, a: argparse.Namespace) -> dict:
    if a.rate is None:
        if a.capacity is None:
            raise SystemExit("load needs --rate, or --capacity (and --fraction)")
        a.rate = a.fraction * a.capacity
    out: dict = {"rate": a.rate, "seconds": a.seconds, "idle_s": a.idle}
    if a.capacity is not None:
        out["capacity_req_s"], out["fraction"] = a.capacity, a.fraction
    out["rss_before_kib"] = rss_kib(srv)
    out["anon_before_kib"] = anon_kib(srv)
    log(f"load: open loop at {a.rate:.0f} req/s for {a.seconds:g} s")
    with sampling(2.0, lambda t: mem(srv, t)) as s:
        r = load.measure(srv, bodies(), a.seconds, a.load_connections, a.rate)
    out["result"], out["samples"] = r, s
    out["rss_peak_kib"] = max(x["rss_kib"] for x in s)
    out["rss_after_load_kib"] = rss_kib(srv)
    log(f"load: {load.fmt_point(r)}; RSS {out['rss_before_kib']} -> peak {out['rss_peak_kib']} KiB")
    idle(srv, a.idle, out)
    return out


def soak(srv: ServeProcess, a: argparse.Namespace) -> dict:
    capacity = a.capacity
    if capacity is None:
        capacity = load.measure(srv, bodies(), CAPACITY_SECONDS, CAPACITY_CONNECTIONS)["ok_per_s"]
    rate = SOAK_FRACTION * capacity
    out: dict = {"capacity_req_s": capacity, "rate": rate, "seconds": a.seconds}
    log(f"soak: {rate:.0f} req/s ({SOAK_FRACTION:.0%} of {capacity:.0f}) for {a.seconds} s")
    with sampling(10.0, lambda t: mem(srv, t)) as s:
        r = load.measure(srv, bodies(), a.seconds, a.load_connections, rate)
    warm = next((x for x in s if x["t"] >= SOAK_WARMUP_S), s[0])
    growth = (s[-1]["rss_kib"] - warm["rss_kib"]) / warm["rss_kib"]
    out.update(result=r, samples=s, rss_after_warmup_kib=warm["rss_kib"])
    out.update(rss_end_kib=s[-1]["rss_kib"], rss_growth=growth)
    out["within_tolerance"] = abs(growth) <= SOAK_TOLERANCE
    log(
        f"soak: {load.fmt_point(r)}; RSS {warm['rss_kib']} -> {s[-1]['rss_kib']} KiB "
        f"({growth:+.1%}; {'within' if out['within_tolerance'] else 'OUTSIDE'} "
        f"{SOAK_TOLERANCE:.0%})"
    )
    return out


def main() -> int:
    argv = sys.argv[1:]
    server_flags: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_flags = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["flood", "load", "soak", "capacity"])
    p.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "aft-serve")
    p.add_argument("--model-dir", type=Path, default=ROOT / "models" / "aft-mini")
    p.add_argument("--connections", type=int, default=20000)
    p.add_argument("--hold", type=float, default=20.0)
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=None)
    p.add_argument("--fraction", type=float, default=0.9, help="load: of --capacity")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--capacity", type=float, default=None)
    p.add_argument("--load-connections", type=int, default=256)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the server only (e.g. LD_PRELOAD=libjemalloc.so.2)",
    )
    a = p.parse_args(argv)
    if a.seconds is None:
        a.seconds = {"soak": 600.0, "capacity": CAPACITY_SECONDS}.get(a.what, 60.0)
    limit = raise_nofile()
    log(f"file limit {limit}; server {a.binary} {' '.join(server_flags)}")
    args = ["--model-dir", str(a.model_dir), *server_flags]
    env = {"AFT_LOG_LEVEL": "warn", **dict(kv.split("=", 1) for kv in a.server_env)}
    with ServeProcess(args=args, binary=a.binary, env=env) as srv:
        run = {"flood": flood, "load": open_loop, "soak": soak, "capacity": capacity}[a.what]
        result = {"what": a.what, "binary": str(a.binary), "server_flags": server_flags}
        result["server_env"] = a.server_env
        result["cpu"] = cpu()
        result.update(run(srv, a))
    text = json.dumps(result, indent=1)
    if a.out:
        a.out.write_text(text)
        log(f"wrote {a.out}")
    return 0 if result.get("within_tolerance", True) else 1


if __name__ == "__main__":
    sys.exit(main())
