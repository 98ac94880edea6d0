"""aft-serve and the two Python peers, one at a time on the same corpus and points: a one-short-
sentence check at c=1, a closed-loop concurrency sweep, then an open-loop sweep of constant
rates (the same absolute rates for every server)."""

from __future__ import annotations

import os

from harness import load, log
from harness.context import Context
from harness.servers import BATCHED_PEER_LIMITS, KINDS, started

PLAIN_STYLES = {
    "async": "async def, forward inline on the event loop",
    "sync": "def, run in FastAPI's thread pool",
}
STYLE_CHECK_CONCURRENCY = 16


def run(ctx: Context) -> None:
    p, mixed = ctx.plan, ctx.bodies["mixed"]
    out: dict = {
        "seconds_per_point": p.point_s,
        "warmup_s": p.warmup_s,
        "concurrency": list(p.concurrency),
        "aft_serve_config": ctx.serve_config(),
        "closed": {},
        "open": {},
        "single_short": {},
        "rss_kib": {},
    }
    out["plain_mode_check"] = plain_style_check(ctx)
    plain_mode = max(out["plain_mode_check"], key=lambda m: out["plain_mode_check"][m]["ok_per_s"])
    out["plain_mode"] = plain_mode
    args = {"aft-serve": ctx.serve_args(), "python-plain": ["--mode", plain_mode]}
    out["server_args"] = args
    out["batched_peer_limits"] = BATCHED_PEER_LIMITS
    for kind in KINDS:
        with started(kind, ctx.model_dir, ctx.log_dir, args.get(kind)) as srv:
            load.warm_up(srv, mixed, p.warmup_s)
            short = load.measure(srv, ctx.bodies["short"], p.point_s, 1)
            out["single_short"][kind] = short
            log(f"{kind} short c=1: {load.fmt_point(short)}")
            points = []
            for c in p.concurrency:
                points.append(load.measure(srv, mixed, p.point_s, c))
                log(f"{kind} closed c={c}: {load.fmt_point(points[-1])}")
            out["closed"][kind] = points
            out["rss_kib"][kind] = srv.rss_bytes() // 1024
    # Open loop: fractions of aft-serve's capacity, plus half of the plain peer's capacity
    # (the "p99 at half load" point).
    cap = max(x["ok_per_s"] for x in out["closed"]["aft-serve"])
    half_plain = round(max(x["ok_per_s"] for x in out["closed"]["python-plain"]) * 0.5, 1)
    rates = sorted({round(cap * f, 1) for f in p.open_fractions} | {half_plain})
    out["open_rates"], out["half_plain_rate"] = rates, half_plain
    out["open_connections"] = p.open_connections
    for kind in KINDS:
        with started(kind, ctx.model_dir, ctx.log_dir, args.get(kind)) as srv:
            load.warm_up(srv, mixed, p.warmup_s)
            points = []
            for rate in rates:
                points.append(load.measure(srv, mixed, p.point_s, p.open_connections, rate))
                log(f"{kind} open {rate}/s: {load.fmt_point(points[-1])}")
            out["open"][kind] = points
    out["loadavg_after"] = os.getloadavg()
    ctx.write("compare", out)


def plain_style_check(ctx: Context) -> dict:
    """The plain peer gets the better of its two handler styles, judged on a short closed-loop
    run of the mixed corpus."""
    p, mixed = ctx.plan, ctx.bodies["mixed"]
    check = {}
    for mode in PLAIN_STYLES:
        with started("python-plain", ctx.model_dir, ctx.log_dir, ["--mode", mode]) as srv:
            load.warm_up(srv, mixed, p.warmup_s)
            r = load.measure(srv, mixed, p.plain_mode_check_s, STYLE_CHECK_CONCURRENCY)
            log(f"python-plain --mode {mode} at c={STYLE_CHECK_CONCURRENCY}: {load.fmt_point(r)}")
            check[mode] = {
                "ok_per_s": r["ok_per_s"],
                "p50_ms": r["p50_ms"],
                "seconds": p.plain_mode_check_s,
                "concurrency": STYLE_CHECK_CONCURRENCY,
            }
    return check
