"""Overload: open loop at 3x aft-serve's capacity with a bounded queue (only 200 and 429 may come
back), then recovery at c=16 against the figure before."""

from __future__ import annotations

import time

from harness import load, log, metrics
from harness.context import Context
from harness.sampler import sampling
from harness.servers import started

FACTOR = 3.0
QUEUE = 256
# aft-serve refuses --max-client-batch-size above --max-queue-size at start-up.
CLIENT_BATCH = 64
SETTLE_S = 3.0


def run(ctx: Context) -> None:
    p, mixed = ctx.plan, ctx.bodies["mixed"]
    cap = ctx.capacity()
    args = [*ctx.serve_args(), "--max-queue-size", str(QUEUE)]
    args += ["--max-client-batch-size", str(CLIENT_BATCH)]
    out: dict = {
        "capacity_req_s": cap,
        "factor": FACTOR,
        "offered_req_s": FACTOR * cap,
        "seconds": p.overload_s,
        "server_args": args,
        "max_queue_size": QUEUE,
        "connections": p.overload_connections,
        "settle_s": SETTLE_S,
    }
    with started("aft-serve", ctx.model_dir, ctx.log_dir, args) as srv:
        load.warm_up(srv, mixed, p.warmup_s)
        out["before"] = load.measure(srv, mixed, p.overload_edge_s, 16)
        log(f"overload before c=16: {load.fmt_point(out['before'])}")

        def sample(t: float) -> dict:
            state = metrics.queue_state(metrics.scrape(srv.url))
            return {"t": t, "rss_kib": srv.rss_bytes() // 1024, **state}

        # No latency correction: the 200s' latencies are the admitted requests' own, not a
        # client-side backlog.
        with sampling(1.0, sample) as samples:
            during = load.measure(
                srv, mixed, p.overload_s, p.overload_connections, FACTOR * cap, False
            )
        out["during"], out["samples"] = during, samples
        log(
            f"overload during: {during['status_codes']} transport {during['transport_errors']}"
            f" p99(200) {during['p99_ms']}"
        )
        time.sleep(SETTLE_S)
        out["after_idle"] = metrics.queue_state(metrics.scrape(srv.url))
        out["after"] = load.measure(srv, mixed, p.overload_edge_s, 16)
        log(f"overload after c=16: {load.fmt_point(out['after'])}")
    ctx.write("overload", out)
