"""Where the cycles go: /metrics stage times, CPU by thread and perf, at saturation."""

from __future__ import annotations

from page.fmt import f, table
from page.run import Run


def section(run: Run) -> str:
    out = "## Where the cycles go (aft-serve at saturation)\n\n"
    profile = run.profile
    if not profile:
        return out + "(not run)\n\n"
    r = profile["load"]
    out += (
        f"Closed loop, concurrency {profile['concurrency']}, mixed corpus, "
        f"{f(profile['seconds'], 0)} s: {f(r['ok_per_s'])} req/s. Server CPU "
        f"{f(r['server_cpu_s_per_s'], 2)} cores, oha {f(r['client_cpu_s_per_s'], 2)} cores.\n\n"
    )
    stages = [
        ("tokenization", "tokenization", 3),
        ("queue wait", "queue", 2),
        ("inference (per batch)", "inference", 2),
        ("whole request", "request", 2),
    ]
    rows = [
        [label, f(r.get(f"{key}_mean_ms"), digits), f(r.get(f"{key}_busy_s_per_s"), 3)]
        for label, key, digits in stages
    ]
    out += (
        "Stage times from `/metrics` (histogram _sum/_count deltas):\n\n"
        + table(["stage", "mean ms", "seconds per second (sum of time in stage)"], rows, run.cpu)
        + "\n"
    )
    threads = profile.get("threads", {})
    if threads:
        total = sum(threads.values()) or 1
        rows = [[k, f(v, 1), f"{100 * v / total:.1f}%"] for k, v in list(threads.items())[:10]]
        out += "Server CPU by thread name over the server's life (/proc/PID/task):\n\n"
        out += table(["thread", "CPU s", "share"], rows, run.cpu) + "\n"
    perf = profile.get("perf")
    if perf:
        out += (
            "`perf record -e cpu-clock -a -g` (software clock: works without hardware "
            "counters), whole machine, by process and library:\n\n"
            + table(
                ["share", "process / library"],
                [[f"{a}%", b] for a, b in perf["by_comm_dso"][:15]],
                run.cpu,
            )
            + "\nTop symbols:\n\n"
            + table(
                ["share", "process / library / symbol"],
                [[f"{a}%", b.replace("|", "\\|")[:140]] for a, b in perf["by_symbol"][:25]],
                run.cpu,
            )
            + "\n"
        )
    else:
        out += "(perf not installed: no system-wide profile in this run.)\n\n"
    return out
