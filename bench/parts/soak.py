"""Soak: open loop at 70% of aft-serve's capacity for a long stretch; errors and resident memory
(VmRSS) over time."""

from __future__ import annotations

from harness import load, log
from harness.context import Context
from harness.sampler import sampling
from harness.servers import started

LOAD_FRACTION = 0.7


def run(ctx: Context) -> None:
    p = ctx.plan
    rate = LOAD_FRACTION * ctx.capacity()
    out: dict = {
        "capacity_req_s": ctx.capacity(),
        "load_fraction": LOAD_FRACTION,
        "rate": rate,
        "seconds": p.soak_s,
        "warmup_s": p.soak_warmup_s,
        "sample_s": p.soak_sample_s,
        "server_args": ctx.serve_args(),
    }
    with started("aft-serve", ctx.model_dir, ctx.log_dir, ctx.serve_args()) as srv:
        with sampling(p.soak_sample_s, lambda t: {"t": t, "rss_kib": srv.rss_bytes() // 1024}) as s:
            r = load.measure(srv, ctx.bodies["mixed"], p.soak_s, p.open_connections, rate)
    after_warm = next((x for x in s if x["t"] >= p.soak_warmup_s), s[0])
    end = s[-1]
    out["result"], out["rss_samples"] = r, s
    out["rss_after_warmup_kib"], out["rss_end_kib"] = after_warm["rss_kib"], end["rss_kib"]
    out["rss_growth"] = (end["rss_kib"] - after_warm["rss_kib"]) / after_warm["rss_kib"]
    log(
        f"soak: {load.fmt_point(r)}; RSS {after_warm['rss_kib']} -> {end['rss_kib']} KiB "
        f"({100 * out['rss_growth']:+.2f}%)"
    )
    ctx.write("soak", out)
