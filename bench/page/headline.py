"""The targets table at the top of the page: each target, its goal, this run's figure."""

from __future__ import annotations

from page.fmt import codes, f, mib, pass_fail, pct, table
from page.run import LIMIT_DEPTH, Run

SERVICE_VS_LIMIT = 0.85
VS_PLAIN = 2.0
HALF_LOAD_P99 = 0.5
SHORT_GAP_MS = 1.0
RECOVERY = 0.9
SOAK_RSS = 0.05


def table_md(run: Run) -> str:
    rows = [*service_rows(run), *overload_rows(run), *soak_rows(run)]
    if not rows:
        return "(no results)\n"
    return table(["target", "goal", "measured (one run)", ""], rows, run.cpu)


def service_rows(run: Run) -> list[list]:
    rows: list[list] = []
    compare, a = run.compare, run.saturation("aft-serve")
    if not compare or not a:
        return rows
    w, t, _ = run.aft_config()
    lim = run.service_limit()
    if lim:
        ratio = a["sentences_per_s"] / lim["sentences_per_s"]
        rows.append(
            [
                "Service throughput at saturation / in-process limit (same texts, "
                f"workers {w} x threads {t}, max batch tokens {lim['max_batch_tokens']}, "
                f"service batch shapes at queue depth {LIMIT_DEPTH})",
                f">= {SERVICE_VS_LIMIT}",
                f"{ratio:.2f} ({f(a['sentences_per_s'])} / {f(lim['sentences_per_s'])} "
                f"sentences/s, c={a['concurrency']})",
                pass_fail(ratio >= SERVICE_VS_LIMIT),
            ]
        )
        sats = run.saturation_points()
        if len(sats) > 1:
            ratio = run.saturation_median() / lim["sentences_per_s"]
            rows.append(
                [
                    "Same, median of this run's saturation measurements of that configuration ("
                    + ", ".join(f"{n}: {f(v)}" for n, v in sats)
                    + ")",
                    f">= {SERVICE_VS_LIMIT}",
                    f"{ratio:.2f} ({f(run.saturation_median())} / {f(lim['sentences_per_s'])} "
                    "sentences/s)",
                    pass_fail(ratio >= SERVICE_VS_LIMIT),
                ]
            )
    p = run.saturation("python-plain")
    if p:
        ratio = a["ok_per_s"] / p["ok_per_s"]
        rows.append(
            [
                "Throughput vs plain Python server (saturation, closed loop)",
                f">= {VS_PLAIN:g}x",
                f"{ratio:.1f}x ({f(a['ok_per_s'])} vs {f(p['ok_per_s'])} req/s)",
                pass_fail(ratio >= VS_PLAIN),
            ]
        )
    half = compare.get("half_plain_rate")
    pa, pp = run.open_point("aft-serve", half or 0), run.open_point("python-plain", half or 0)
    if pa and pp and pa["p99_ms"] and pp["p99_ms"]:
        ratio = pa["p99_ms"] / pp["p99_ms"]
        rows.append(
            [
                f"p99 at half load ({f(half)} req/s open loop = 50% of the plain server's "
                "capacity), aft-serve / plain",
                f"<= {HALF_LOAD_P99}",
                f"{ratio:.2f} ({f(pa['p99_ms'], 2)} ms vs {f(pp['p99_ms'], 2)} ms)",
                pass_fail(ratio <= HALF_LOAD_P99),
            ]
        )
    short, bare = compare.get("single_short", {}).get("aft-serve"), run.bare_forward()
    if short and bare and short["p50_ms"] is not None:
        gap = short["p50_ms"] - bare["forward_ms"]["p50"]
        rows.append(
            [
                "p50, one short sentence, concurrency 1, minus bare forward p50",
                f"<= {SHORT_GAP_MS:g} ms",
                f"{gap:.2f} ms ({f(short['p50_ms'], 2)} ms HTTP vs "
                f"{f(bare['forward_ms']['p50'], 2)} ms forward)",
                pass_fail(gap <= SHORT_GAP_MS),
            ]
        )
    return rows


def overload_rows(run: Run) -> list[list]:
    o = run.overload
    if not o:
        return []
    d = o["during"]
    only = all(k in ("200", "429") for k in d["status_codes"]) and not d["transport_errors"]
    transport = f"; transport errors {d['transport_errors']}" if d["transport_errors"] else ""
    rec = o["after"]["ok_per_s"] / o["before"]["ok_per_s"]
    return [
        [
            f"Overload at {o['factor']:g}x capacity ({f(o['offered_req_s'])} req/s offered, "
            f"{f(o['seconds'], 0)} s): only 200 and 429",
            "no 5xx, no other errors",
            codes(d["status_codes"]) + transport,
            pass_fail(only),
        ],
        [
            "Recovery: throughput after overload / before (c=16)",
            f">= {RECOVERY}, no errors",
            f"{rec:.2f} (errors after: {o['after']['errors']})",
            pass_fail(rec >= RECOVERY and o["after"]["errors"] == 0),
        ],
    ]


def soak_rows(run: Run) -> list[list]:
    s = run.soak
    if not s:
        return []
    g, r = s["rss_growth"], s["result"]
    rows = [
        [
            f"Soak {f(s['seconds'] / 60, 1)} min at {pct(s['load_fraction'], 0)} of capacity "
            f"({f(s['rate'])} req/s): peak RSS of the last {f(s['window_s'], 0)} s vs the first "
            "after warm-up, errors",
            f"within {pct(SOAK_RSS, 0)}, 0 errors",
            f"{pct(g, 2, sign=True)} ({mib(s['rss_after_warmup_kib'])} -> "
            f"{mib(s['rss_end_kib'])}), {r['errors']} errors",
            pass_fail(abs(g) <= SOAK_RSS and r["errors"] == 0),
        ]
    ]
    tail = run.soak_tail()
    if tail:
        rows.append(
            [
                "Soak: change of the window peak over the second half (context: a leak keeps "
                "growing, a warm-up levels off)",
                "–",
                f"{pct(tail['second_half_change'], 2, sign=True)}; last new peak in the window "
                f"from t = {tail['last_growth_t']:.0f} s (of {tail['end_t']:.0f} s)",
                "",
            ]
        )
    return rows
