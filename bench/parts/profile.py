"""Where the cycles go at saturation: /metrics stage times, the server's CPU by thread, and (when
perf is installed) a system-wide software-clock profile."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness import load, log
from harness.context import Context
from harness.servers import started

CONCURRENCY = 256
PERF_HZ = 999
PERF_MIN_PERCENT = "0.5"


def run(ctx: Context) -> None:
    p, mixed = ctx.plan, ctx.bodies["mixed"]
    out: dict = {"seconds": p.profile_s, "concurrency": CONCURRENCY}
    out["server_args"] = ctx.serve_args()
    perf = shutil.which("perf")
    data = ctx.results.dir / "perf.data"
    with started("aft-serve", ctx.model_dir, ctx.log_dir, ctx.serve_args()) as srv:
        load.warm_up(srv, mixed, p.warmup_s)
        recorder = None
        if perf:
            # Stops a little before the load does, so that it sees only the loaded stretch.
            cmd = [perf, "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-a", "-g"]
            cmd += ["-o", str(data), "--", "sleep", str(max(1.0, p.profile_s - 2))]
            recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["load"] = load.measure(srv, mixed, p.profile_s, CONCURRENCY)
        log(f"profile load: {load.fmt_point(out['load'])}")
        out["threads"] = thread_cpu(srv.pid)
        if recorder:
            recorder.wait()
    if perf and data.exists():
        out["perf"] = perf_summary(perf, data)
    ctx.write("profile", out)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds over the process' life by thread name (numbered names merged)."""
    per: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # threads come and go
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            name = re.sub(r"[-_]?\d+$", "", name) or name
            f = stat.rsplit(")", 1)[1].split()
            per[name] = per.get(name, 0.0) + (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def perf_summary(perf: str, data: Path) -> dict:
    def report(sort: str) -> list[list[str]]:
        cmd = [perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort]
        cmd += ["-g", "none", "--percent-limit", PERF_MIN_PERCENT]
        rows = []
        for line in subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines():
            m = re.match(r"^([\d.]+)%\s+(.*)$", line.strip())
            if m:
                rows.append([m.group(1), re.sub(r"\s+", " ", m.group(2))])
        return rows

    return {"by_comm_dso": report("comm,dso")[:25], "by_symbol": report("comm,dso,sym")[:40]}
