"""The closing note's figures, written from the results: what this run measured for each target
and the context figures behind it. The interpretation that holds whatever the numbers are is
hand-written in bench/analysis.md; nothing here is typed in from a past run."""

from __future__ import annotations

from collections.abc import Callable

from page.fmt import codes, f, mib, pct
from page.run import LIMIT_DEPTH, Run


def markdown(run: Run) -> str:
    items = [item(run) for item in ITEMS]
    bullets = [f"- {text}\n" for text in items if text]
    if not bullets:
        return ""
    return "## What this run measured\n\n" + intro(run) + "\n" + "".join(bullets) + "\n"


def intro(run: Run) -> str:
    m, model = run.machine, run.facts.get("model", {})
    load = m.get("loadavg_before") or [None]
    text = (
        f"From the run reported on this page ({model.get('name')}, {run.nproc} CPUs, started "
        f"{run.started} at commit {', '.join(run.commits)}; 1-minute load average "
        f"{f(load[0], 2)} when the load comparison began)."
    )
    rec = (run.config or {}).get("recommended")
    if rec:
        flags = [f"--workers {rec['workers']}", f"--intra-op-threads {rec['intra_op_threads']}"]
        flags = " ".join([*flags, f"--max-batch-tokens {rec['max_batch_tokens']}"])
        ran = " ".join((run.compare or {}).get("server_args", {}).get("aft-serve", []))
        text += f" The configuration study chose `{flags}`" + (
            ", and every later part ran aft-serve with those flags."
            if ran == flags
            else f"; the load comparison ran aft-serve with `{ran or 'its defaults'}`."
        )
    return text + "\n"


def service_vs_limit(run: Run) -> str | None:
    lim, sat = run.service_limit(), run.saturation("aft-serve")
    if not lim or not sat:
        return None
    pts = run.saturation_points()
    text = (
        f"*Service vs in-process limit.* The limit at the service's batch shapes is "
        f"{f(lim['sentences_per_s'])} sentences/s; the sweep's best point is "
        f"{f(sat['ok_per_s'])} req/s (c={sat['concurrency']}), "
        f"**{sat['ok_per_s'] / lim['sentences_per_s']:.2f}** of it."
    )
    if len(pts) > 1:
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        med = run.saturation_median()
        text += (
            f" The {len(pts)} saturation measurements of this configuration span "
            f"{f(lo)}-{f(hi)} req/s (±{pct((hi - lo) / 2 / med, 0)} around their median "
            f"{f(med)}, **{med / lim['sentences_per_s']:.2f}** of the limit)."
        )
    batches = sat.get("batches_per_s")
    if batches:
        text += f" A point holds about {batches * sat['seconds']:,.0f} batches."
    busy, workers = sat.get("inference_busy_s_per_s"), run.aft_config()[0]
    if busy is not None:
        text += (
            f" At that point the inference worker(s) were busy {pct(busy / workers, 0)} of the "
            f"wall clock (Δ`aft_inference_duration_seconds_sum` per second / {workers} worker(s))."
        )
    return text


def against_plain(run: Run) -> str | None:
    a, p = run.saturation("aft-serve"), run.saturation("python-plain")
    if not a or not p:
        return None
    text = (
        f"*Against the plain Python server.* **{a['ok_per_s'] / p['ok_per_s']:.1f}x** at "
        f"saturation in the sweep ({f(a['ok_per_s'])} vs {f(p['ok_per_s'])} req/s)"
    )
    med = run.saturation_median()
    if med and len(run.saturation_points()) > 1:
        text += f", {med / p['ok_per_s']:.1f}x with the median service figure"
    return text + "."


def p99_by_rate(run: Run) -> str | None:
    compare = run.compare or {}
    pairs = []
    for rate in compare.get("open_rates", []):
        a, p = run.open_point("aft-serve", rate), run.open_point("python-plain", rate)
        if a and p and a["p99_ms"] and p["p99_ms"]:
            pairs.append((rate, a, p))
    if not pairs:
        return None
    listed = "; ".join(
        f"{f(rate)} req/s: {f(a['p99_ms'], 1)} vs {f(p['p99_ms'], 1)} ms "
        f"({a['p99_ms'] / p['p99_ms']:.2f})"
        for rate, a, p in pairs
    )
    return (
        "*p99 across the open-loop rates*, aft-serve vs the plain server (ratio); the "
        f"headline's half-load point is {f(compare.get('half_plain_rate'))} req/s: {listed}."
    )


def short_sentence(run: Run) -> str | None:
    short = (run.compare or {}).get("single_short", {}).get("aft-serve")
    bare = run.bare_forward()
    if not short or not bare or short["p50_ms"] is None:
        return None
    fwd, tok = bare["forward_ms"]["p50"], bare["tokenize_forward_ms"]["p50"]
    return (
        f"*One short sentence at concurrency 1.* p50 {f(short['p50_ms'], 2)} ms over HTTP "
        f"against a bare forward p50 of {f(fwd, 2)} ms at {bare['threads']} thread(s): a gap "
        f"of **{short['p50_ms'] - fwd:.2f} ms**, of which tokenization is {tok - fwd:.2f} ms."
    )


def overload(run: Run) -> str | None:
    o = run.overload
    if not o:
        return None
    d = o["during"]
    other = {k: v for k, v in d["status_codes"].items() if k not in ("200", "429")}
    verdict = "only " + " and ".join(f"{k}s" for k in sorted(d["status_codes"]))
    if other or d["transport_errors"]:
        verdict = f"{codes(d['status_codes'])}, transport errors {d['transport_errors'] or 'none'}"
    refused = (
        f"the 429s came back in {f(d['rejected_p50_ms'], 2)} ms (p50)"
        if d["status_codes"].get("429")
        else "no request was refused (429)"
    )
    return (
        f"*Overload at {o['factor']:g}x capacity.* The service returned {verdict}. The 200s "
        f"came at {f(d['ok_per_s'], 0)}/s with p99 {f(d['p99_ms'], 0)} ms, bounded by the "
        f"{o['max_queue_size']}-input queue; {refused}. {f(o['settle_s'], 0)} s later the "
        f"queue held {f(o['after_idle']['queue_depth'], 0)} inputs, and throughput at c=16 "
        f"afterwards was {o['after']['ok_per_s'] / o['before']['ok_per_s']:.2f} of the figure "
        "before."
    )


def soak(run: Run) -> str | None:
    s, tail = run.soak, run.soak_tail()
    if not s:
        return None
    r = s["result"]
    text = (
        f"*Soak ({f(s['seconds'] / 60, 1)} min at {f(s['rate'], 0)} req/s).* {r['errors']} "
        f"errors ({f(r['ok'])} 200s). The peak RSS of each {f(s['window_s'], 0)} s window "
        f"went from {mib(s['rss_after_warmup_kib'])} in the first after the warm-up "
        f"({f(s['warmup_s'], 0)} s) to {mib(s['rss_end_kib'])} in the last "
        f"({pct(s['rss_growth'], 1, sign=True)})"
    )
    if tail:
        text += (
            f"; it changed {pct(tail['second_half_change'], 2, sign=True)} over the second half "
            f"and last set a new high in the window from t = {tail['last_growth_t']:.0f} s; the "
            f"highest sample was {mib(tail['peak_kib'])} (t = {tail['peak_t']:.0f} s)"
        )
    text += (
        f". Latency: p50 {f(r['p50_ms'], 0)} ms, p90 {f(r['p90_ms'], 0)} ms, "
        f"p99 {f(r['p99_ms'], 0)} ms"
    )
    near = nearest_open_point(run, s["rate"])
    if near:
        text += (
            f" (the {f((run.compare or {}).get('seconds_per_point'), 0)} s open-loop point at "
            f"{f(near['rate'])} req/s: p99 {f(near['p99_ms'], 0)} ms)"
        )
    return text + "."


def nearest_open_point(run: Run, rate: float) -> dict | None:
    pts = (run.compare or {}).get("open", {}).get("aft-serve", [])
    return min(pts, key=lambda p: abs(p["rate"] - rate)) if pts else None


def cycles(run: Run) -> str | None:
    limit = run.limit or {}
    fpt = limit.get("flops", {}).get("counted_per_token")
    lim = run.service_limit()
    parts = []
    if fpt and lim:
        gflops = fpt * lim["tokens_per_s"] / 1e9
        peak = next(
            (
                m["gflops"]
                for m in limit.get("matmul", [])
                if m["threads"] == lim["intra_op_threads"]
            ),
            None,
        )
        text = (
            f"The model does {fpt / 1e6:.2f} MFLOP of matmul per token, so the limit's "
            f"{f(lim['tokens_per_s'], 0)} tokens/s come to {f(gflops, 1)} GFLOP/s"
        )
        if peak:
            text += (
                f", **{pct(gflops / peak, 0)} of the machine's {lim['intra_op_threads']}-thread "
                f"f32 matmul peak ({f(peak, 0)} GFLOP/s)**"
            )
        parts.append(text + ".")
    perf = (run.profile or {}).get("perf")
    if perf and perf.get("by_comm_dso"):
        top = "; ".join(f"{share}% {what}" for share, what in perf["by_comm_dso"][:4])
        parts.append(f"Largest shares of all CPU samples on the machine (process, library): {top}.")
    if not parts:
        return None
    return "*Where the cycles go.* " + " ".join(parts)


def batch_shapes(run: Run) -> str | None:
    w, t, _ = run.aft_config()
    limit_rows = [
        r
        for r in (run.limit or {}).get("service_shapes", [])
        if r["queue_depth"] == LIMIT_DEPTH and (r["workers"], r["intra_op_threads"]) == (w, t)
    ]
    service_rows = [
        r
        for r in (run.config or {}).get("runs", [])
        if (r["workers"], r["intra_op_threads"]) == (w, t)
    ]
    if len(limit_rows) < 2 and len(service_rows) < 2:
        return None
    text = f"*Max batch tokens* ({w} worker(s) x {t} thread(s)):"
    if len(limit_rows) > 1:
        text += " in process " + ", ".join(
            f"{r['max_batch_tokens']}: {f(r['sentences_per_s'], 0)} sentences/s "
            f"({pct(r['padding_fraction'])} padding)"
            for r in sorted(limit_rows, key=lambda r: r["max_batch_tokens"])
        )
        text += ";" if len(service_rows) > 1 else "."
    if len(service_rows) > 1:
        text += " in the service at c=256 " + ", ".join(
            f"{r['max_batch_tokens']}: {f(r['c256']['ok_per_s'], 0)} req/s, RSS {mib(r['rss_kib'])}"
            for r in sorted(service_rows, key=lambda r: r["max_batch_tokens"])
        )
        text += "."
    return text


def peers(run: Run) -> str | None:
    closed = (run.compare or {}).get("closed", {})
    mode = (run.compare or {}).get("plain_mode")
    names = {
        "python-plain": f"The plain peer (`{mode}` handler style)" if mode else "The plain peer",
        "python-batched": "The batched peer",
    }
    texts = []
    for kind, name in names.items():
        pts = closed.get(kind)
        if pts:
            best, last = max(pts, key=lambda p: p["ok_per_s"]), pts[-1]
            texts.append(
                f"{name} peaked at {f(best['ok_per_s'], 0)} req/s (c={best['concurrency']}) and "
                f"served {f(last['ok_per_s'], 0)} req/s at c={last['concurrency']}."
            )
    return "*Peers.* " + " ".join(texts) if texts else None


ITEMS: list[Callable[[Run], str | None]] = [
    service_vs_limit,
    against_plain,
    p99_by_rate,
    short_sentence,
    overload,
    soak,
    cycles,
    batch_shapes,
    peers,
]
