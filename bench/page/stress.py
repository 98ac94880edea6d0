"""Section 5: overload at a multiple of capacity, and the soak."""

from __future__ import annotations

from page.fmt import codes, f, pct, table
from page.run import Run


def section(run: Run) -> str:
    return "## 5. Overload and soak\n\n" + overload(run.overload, run.cpu) + soak(run.soak, run.cpu)


def overload(o: dict | None, cpu: str) -> str:
    if not o:
        return "Overload: (not run)\n\n"
    d, before, after = o["during"], o["before"], o["after"]
    out = (
        f"Overload: open loop at **{o['factor']:g}x capacity** ({f(o['offered_req_s'])} req/s "
        f"offered, capacity {f(o['capacity_req_s'])} req/s from the closed-loop sweep) for "
        f"{f(o['seconds'], 0)} s over {o['connections']} connections, server flags "
        f"`{' '.join(o['server_args'])}` (a queue of at most {o['max_queue_size']} waiting "
        "inputs; past it, 429). Latencies measured from each request's send (no latency "
        "correction: this is the admitted requests' latency, not a client backlog).\n\n"
    )
    rows = [
        ["status codes", codes(d["status_codes"])],
        ["transport errors", d["transport_errors"] or "none"],
        ["requests cut off by the end of the run", d.get("aborted_at_deadline", 0)],
        ["200s per second", f(d["ok_per_s"])],
        [
            "200 latency p50 / p90 / p99 / p99.9 ms",
            " / ".join(f(d[k], 1) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms")),
        ],
        [
            "429 latency p50 / p99 ms",
            f"{f(d['rejected_p50_ms'], 2)} / {f(d['rejected_p99_ms'], 2)}",
        ],
        ["mean batch size during overload", f(d.get("mean_batch_size"))],
        [
            f"queue depth / in flight {f(o['settle_s'], 0)} s after",
            f"{o['after_idle']['queue_depth']} / {o['after_idle']['in_flight']}",
        ],
        ["before: c=16 req/s, p99 ms", f"{f(before['ok_per_s'])}, {f(before['p99_ms'], 1)}"],
        [
            "after: c=16 req/s, p99 ms, errors",
            f"{f(after['ok_per_s'])}, {f(after['p99_ms'], 1)}, {after['errors']}",
        ],
    ]
    return out + table(["", "value"], rows, cpu) + "\n"


def soak(s: dict | None, cpu: str) -> str:
    if not s:
        return "Soak: (not run)\n\n"
    r = s["result"]
    out = (
        f"Soak: open loop at **{pct(s['load_fraction'], 0)} of capacity** ({f(s['rate'])} req/s) "
        f"for {f(s['seconds'] / 60, 1)} min, RSS (VmRSS) sampled every {f(s['sample_s'], 0)} s. "
        f"aft-serve gives freed memory back every few seconds, so single samples swing between "
        f"trough and peak; memory is judged by the peak of each {f(s['window_s'], 0)} s window, "
        f"'after warm-up' being the first window from {f(s['warmup_s'], 0)} s.\n\n"
    )
    rows = [
        ["req/s served", f(r["ok_per_s"])],
        ["p50 / p90 / p99 ms", f"{f(r['p50_ms'], 2)} / {f(r['p90_ms'], 2)} / {f(r['p99_ms'], 2)}"],
        [
            "errors",
            f"{r['errors']} ({r['status_codes']}, transport {r['transport_errors'] or 'none'})",
        ],
        [
            "peak RSS, first window after warm-up / last window",
            f"{s['rss_after_warmup_kib'] / 1024:.1f} / {s['rss_end_kib'] / 1024:.1f} MiB",
        ],
        ["peak RSS change", pct(s["rss_growth"], 2, sign=True)],
        ["mean batch size", f(r.get("mean_batch_size"))],
    ]
    return out + table(["", "value"], rows, cpu) + "\n![RSS during the soak](bench-soak.png)\n\n"
