"""Soak: open loop at 70% of aft-serve's capacity for a long stretch; errors and resident memory
(VmRSS) over time.

aft-serve gives freed memory back to the kernel every `--memory-release-interval` (10 s), so one
RSS sample lands anywhere between the trough after a release and the peak before the next (they
differ about twofold under load). Memory is therefore judged by the peak of each window of
`soak_window_s`, which spans several releases: what stays resident at most, minute by minute."""

from __future__ import annotations

from harness import load, log
from harness.context import Context
from harness.sampler import sampling
from harness.servers import started

LOAD_FRACTION = 0.7


def window_peaks(samples: list[dict], start_t: float, window_s: float) -> list[dict]:
    """The highest RSS in each whole window of window_s from start_t on ({"t": window start,
    "peak_kib"}); a last, partial window is left out."""
    count = int((samples[-1]["t"] - start_t) // window_s)
    out = []
    for i in range(count):
        t = start_t + i * window_s
        inside = [x["rss_kib"] for x in samples if t <= x["t"] < t + window_s]
        if inside:
            out.append({"t": t, "peak_kib": max(inside)})
    return out


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
        "window_s": p.soak_window_s,
        "server_args": ctx.serve_args(),
    }
    with started("aft-serve", ctx.model_dir, ctx.log_dir, ctx.serve_args()) as srv:
        with sampling(p.soak_sample_s, lambda t: {"t": t, "rss_kib": srv.rss_bytes() // 1024}) as s:
            r = load.measure(srv, ctx.bodies["mixed"], p.soak_s, p.open_connections, rate)
    windows = window_peaks(s, p.soak_warmup_s, p.soak_window_s)
    if not windows:
        raise SystemExit(f"soak: no whole {p.soak_window_s} s window after the warm-up")
    first, last = windows[0]["peak_kib"], windows[-1]["peak_kib"]
    out["result"], out["rss_samples"], out["rss_windows"] = r, s, windows
    out["rss_after_warmup_kib"], out["rss_end_kib"] = first, last
    out["rss_growth"] = (last - first) / first
    log(
        f"soak: {load.fmt_point(r)}; peak RSS per {p.soak_window_s:.0f} s window "
        f"{first} -> {last} KiB ({100 * out['rss_growth']:+.2f}%)"
    )
    ctx.write("soak", out)
