"""Turns bench/results/*.json into docs/BENCHMARKS.md and docs/bench-*.png.

Usage: .venv/bin/python bench/report.py [--quick]   (bench/run-all calls it)
The hand-written analysis comes from bench/analysis.md, placed after the generated headline.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("AFT_BENCH_RESULTS", ROOT / "bench" / "results"))
DOCS = ROOT / "docs"
KINDS = ["aft-serve", "python-batched", "python-plain"]
LABEL = {
    "aft-serve": "aft-serve",
    "python-plain": "Python plain (FastAPI, 1 forward/request)",
    "python-batched": "Python batched (FastAPI + asyncio batching)",
}
COLOR = {"aft-serve": "tab:blue", "python-plain": "tab:red", "python-batched": "tab:orange"}


def load(part: str) -> dict | None:
    p = RESULTS / f"{part}.json"
    return json.loads(p.read_text()) if p.exists() else None


def f(v, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def pass_fail(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# ----------------------------------------------------------------------------- headline


def best_limit(
    limit: dict,
    workers: int | None = None,
    threads: int | None = None,
    depth: int = 256,
    mbt: int = 8192,
) -> dict | None:
    rows = [
        r
        for r in limit.get("service_shapes", [])
        if r.get("queue_depth") == depth
        and r.get("max_batch_tokens") == mbt
        and (workers is None or r["workers"] == workers)
        and (threads is None or r["intra_op_threads"] == threads)
    ]
    return max(rows, key=lambda r: r["sentences_per_s"]) if rows else None


def default_config(compare: dict | None) -> tuple[int, int, int]:
    """(workers, intra-op threads, max batch tokens) aft-serve ran with in the compare part."""
    if compare and compare.get("aft_serve_config"):
        c = compare["aft_serve_config"]
        return c["workers"], c["intra_op_threads"], c.get("max_batch_tokens") or 8192
    return 1, 2, 8192


def bare_forward(limit: dict, threads: int) -> dict:
    return (limit.get("single_short_by_threads") or {}).get(str(threads)) or limit["single_short"]


def saturation_points(compare: dict, w: int, t: int, mbt: int) -> list[tuple[str, float]]:
    """Every saturation measurement of aft-serve with this configuration in the run."""
    pts = [("sweep max", max(p["ok_per_s"] for p in compare["closed"]["aft-serve"]))]
    config, profile = load("config"), load("profile")
    for r in (config or {}).get("runs", []):
        if (r["workers"], r["intra_op_threads"], r["max_batch_tokens"]) == (w, t, mbt):
            pts.append(("config study c=256", r["c256"]["ok_per_s"]))
    if profile and profile.get("server_args") == [
        "--workers",
        str(w),
        "--intra-op-threads",
        str(t),
        "--max-batch-tokens",
        str(mbt),
    ]:
        pts.append(("profile c=256", profile["load"]["ok_per_s"]))
    return pts


def rss_tail_change(soak: dict) -> tuple[float, float] | None:
    """(RSS change over the soak's second half, time RSS last grew) from the samples."""
    smp = soak.get("rss_samples") or []
    if len(smp) < 4:
        return None
    half = smp[-1]["t"] / 2
    mid = next(x for x in smp if x["t"] >= half)
    last_growth = 0.0
    for a, b in zip(smp, smp[1:], strict=False):
        if b["rss_kib"] > a["rss_kib"]:
            last_growth = b["t"]
    return (smp[-1]["rss_kib"] - mid["rss_kib"]) / mid["rss_kib"], last_growth


def headline(limit, compare, overload, soak) -> tuple[str, list[str]]:
    lines = []
    rows = []
    if compare:
        closed = compare["closed"]
        sat = {k: max(closed[k], key=lambda p: p["ok_per_s"]) for k in closed}
        a = sat["aft-serve"]
        if limit:
            w, t, mbt = default_config(compare)
            lim = best_limit(limit, w, t, mbt=mbt) or best_limit(limit, w, t)
            if lim:
                ratio = a["sentences_per_s"] / lim["sentences_per_s"]
                rows.append(
                    [
                        "Service throughput at saturation / in-process limit (same texts, "
                        f"workers {w} x threads {t}, max batch tokens {lim['max_batch_tokens']}"
                        ", service batch shapes at queue depth 256)",
                        ">= 0.85",
                        f"{ratio:.2f} ({f(a['sentences_per_s'])} / {f(lim['sentences_per_s'])} "
                        f"sentences/s, c={a['concurrency']})",
                        pass_fail(ratio >= 0.85),
                    ]
                )
                sats = saturation_points(compare, w, t, lim["max_batch_tokens"])
                if len(sats) > 1:
                    med = sorted(v for _, v in sats)[len(sats) // 2]
                    ratio = med / lim["sentences_per_s"]
                    rows.append(
                        [
                            "Same, median of this run's saturation measurements of that "
                            "configuration (" + ", ".join(f"{n}: {f(v)}" for n, v in sats) + ")",
                            ">= 0.85",
                            f"{ratio:.2f} ({f(med)} / {f(lim['sentences_per_s'])} sentences/s)",
                            pass_fail(ratio >= 0.85),
                        ]
                    )
        if "python-plain" in sat:
            p = sat["python-plain"]
            ratio = a["ok_per_s"] / p["ok_per_s"]
            rows.append(
                [
                    "Throughput vs plain Python server (saturation, closed loop)",
                    ">= 2x",
                    f"{ratio:.1f}x ({f(a['ok_per_s'])} vs {f(p['ok_per_s'])} req/s)",
                    pass_fail(ratio >= 2),
                ]
            )
            half = compare.get("half_plain_rate")
            op = compare.get("open", {})
            if half and "python-plain" in op and "aft-serve" in op:
                pa = next((x for x in op["aft-serve"] if abs(x["rate"] - half) < 0.06), None)
                pp = next((x for x in op["python-plain"] if abs(x["rate"] - half) < 0.06), None)
                if pa and pp and pa["p99_ms"] and pp["p99_ms"]:
                    ratio = pa["p99_ms"] / pp["p99_ms"]
                    rows.append(
                        [
                            f"p99 at half load ({f(half)} req/s open loop = 50% of the plain "
                            "server's capacity), aft-serve / plain",
                            "<= 0.5",
                            f"{ratio:.2f} ({f(pa['p99_ms'], 2)} ms vs {f(pp['p99_ms'], 2)} ms)",
                            pass_fail(ratio <= 0.5),
                        ]
                    )
        if limit and "aft-serve" in compare.get("single_short", {}):
            s = compare["single_short"]["aft-serve"]
            bare = bare_forward(limit, default_config(compare)[1])["forward_ms"]["p50"]
            gap = s["p50_ms"] - bare
            rows.append(
                [
                    "p50, one short sentence, concurrency 1, minus bare forward p50",
                    "<= 1 ms",
                    f"{gap:.2f} ms ({f(s['p50_ms'], 2)} ms HTTP vs {f(bare, 2)} ms forward)",
                    pass_fail(gap <= 1.0),
                ]
            )
    if overload:
        d = overload["during"]
        codes = d["status_codes"]
        only = all(k in ("200", "429") for k in codes) and not d["transport_errors"]
        rows.append(
            [
                f"Overload at 3x capacity ({f(overload['offered_req_s'])} req/s offered, "
                f"{f(overload['seconds'], 0)} s): only 200 and 429",
                "no 5xx, no other errors",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(codes.items()))
                + (f"; transport errors {d['transport_errors']}" if d["transport_errors"] else ""),
                pass_fail(only),
            ]
        )
        rec = overload["after"]["ok_per_s"] / overload["before"]["ok_per_s"]
        rows.append(
            [
                "Recovery: throughput after overload / before (c=16)",
                ">= 0.9, no errors",
                f"{rec:.2f} (errors after: {overload['after']['errors']})",
                pass_fail(rec >= 0.9 and overload["after"]["errors"] == 0),
            ]
        )
    if soak:
        g = soak["rss_growth"]
        r = soak["result"]
        rows.append(
            [
                f"Soak {f(soak['seconds'] / 60, 0)} min at 70% of capacity "
                f"({f(soak['rate'])} req/s): RSS end vs after warm-up, errors",
                "within 5%, 0 errors",
                f"{100 * g:+.2f}% ({soak['rss_after_warmup_kib'] / 1024:.0f} -> "
                f"{soak['rss_end_kib'] / 1024:.0f} MiB), {r['errors']} errors",
                pass_fail(abs(g) <= 0.05 and r["errors"] == 0),
            ]
        )
        tail = rss_tail_change(soak)
        if tail:
            rows.append(
                [
                    "Soak: RSS change over the second half (context: is it a leak or a slow "
                    "warm-up?)",
                    "–",
                    f"{100 * tail[0]:+.2f}%; RSS last grew at t = {tail[1]:.0f} s of "
                    f"{soak['rss_samples'][-1]['t']:.0f} s",
                    "",
                ]
            )
    text = table(["target", "goal", "measured (one run)", ""], rows) if rows else "(no results)\n"
    return text, lines


# ----------------------------------------------------------------------------- sections


def section_machine(compare: dict | None, limit: dict | None) -> str:
    m = (compare or {}).get("machine") or {}
    out = "## Machine and versions\n\n"
    if not m:
        return out + "(compare part not run)\n\n"
    torch_v = m.get("torch") or []
    rows = [
        [
            "CPU",
            f"{m.get('cpu_model')} ({m.get('nproc')} logical CPUs visible), "
            f"{', '.join(m.get('cpu_flags', []))}",
        ],
        ["memory", f"{m.get('mem_gib')} GiB"],
        ["kernel", m.get("kernel")],
        ["Rust", m.get("rustc")],
        ["load generator", m.get("oha")],
        [
            "Python / torch / FastAPI / uvicorn / tokenizers",
            f"{m.get('python')} / " + " / ".join(torch_v),
        ],
        ["load average before the run", ", ".join(f"{x:.2f}" for x in m.get("loadavg_before", []))],
        ["busiest processes before the run", "; ".join(m.get("top_processes_before", []))],
        ["run started (UTC)", m.get("time")],
    ]
    if limit:
        t = limit.get("torch", {})
        rows.append(
            [
                "libtorch",
                f"OpenMP {t.get('has_openmp')}, MKL {t.get('has_mkl')}, "
                f"oneDNN {t.get('has_mkldnn')}",
            ]
        )
        rows.append(
            [
                "model",
                f"{limit.get('model_name')} ({limit.get('model_dir')}), "
                f"{json.dumps(limit.get('manifest_model'))}",
            ]
        )
    return out + table(["", ""], rows) + "\n"


def section_limit(limit: dict | None) -> str:
    out = "## 1. The in-process limit\n\n"
    if not limit:
        return out + "(not run)\n\n"
    out += (
        "`examples/forward_bench.rs` loads `model.pt` with tch (`CModule::load`, cast to float32, "
        "eval, no_grad), tokenizes the corpus with the bundle's tokenizer, and forms batches "
        "exactly as the service's batcher does at saturation: a queue of *depth* waiting inputs "
        "drawn in corpus order, the batch chosen by the same rule as `select_batch` in "
        "`src/core/batcher.rs` (oldest input plus the closest lengths, within --max-batch-size "
        "64 and --max-batch-tokens, at most half padding), refilled as batches leave. Each "
        "worker thread owns a replica and sets its intra-op threads, as the service's workers "
        "do. Tokens/s counts real (unpadded) tokens.\n\n"
        f"Corpus: {limit['corpus_texts']} texts, {limit['corpus_tokens']} tokens "
        f"(mean {limit['corpus_tokens'] / limit['corpus_texts']:.1f}). "
        f"Each point runs {limit['seconds_per_point']} s after a warm-up.\n\n"
    )
    mm = limit.get("matmul", [])
    peak = max((m["gflops"] for m in mm), default=None)
    out += "### Machine matmul peak\n\n" + table(
        ["threads", "f32 matmul", "GFLOP/s"],
        [[m["threads"], f"{m['n']}x{m['n']}", f(m["gflops"])] for m in mm],
    )
    fl = limit.get("flops", {})
    fpt = fl.get("counted_per_token")
    out += "\n### Model FLOPs per token\n\n"
    if fpt:
        terms = (fl.get("formula") or {}).get("terms_per_token", {})
        out += (
            "Matmul FLOPs (2 x multiply-adds) per real token, from the manifest's "
            "hyper-parameters (d = d_model, L = n_layers, r = bias_rank, e = "
            "token_embedding_dim, T = sequence length):\n\n"
            "```\nper sequence = 2 T e d                      (factorised embedding)\n"
            "             + L [ 8 T d^2                   (Q, K, V, output projections)\n"
            "                 + 4 T d d_ff                (feed-forward)\n"
            "                 + 2 T^2 r                   (position bias u v^T, full/local)\n"
            "                 + 4 T^2 d if dense else 0 ] (AFT-full, or AFT-local when "
            "window >= T)\n"
            "             + 2 d D + 2 D C                 (output projection, head)\n```\n\n"
            "AFT-local with window < T mixes tokens with banded elementwise work (about "
            "8 d (2 window - 1) FLOPs per token per layer), not matmuls; it is listed but not "
            "counted below. Averaged over the corpus (a fixed 1-in-25 sample at each text's own "
            f"length): **{fpt / 1e6:.2f} MFLOP per token** (torch's FLOP counter on the "
            "TorchScript module agrees with the formula: "
            f"{(fl.get('formula') or {}).get('per_token_matmul', 0) / 1e6:.2f} MFLOP). "
            f"Parameters: {fl.get('params', 0) / 1e6:.2f} M.\n\n"
        )
        if terms:
            out += (
                table(["term", "FLOPs per token"], [[k, f(float(v), 0)] for k, v in terms.items()])
                + "\n"
            )
    out += "### Throughput at the service's batch shapes\n\n"
    rows = []
    for r in limit.get("service_shapes", []):
        gf = (fpt or 0) * r["tokens_per_s"] / 1e9
        rows.append(
            [
                r["queue_depth"],
                r["workers"],
                r["intra_op_threads"],
                r["max_batch_tokens"],
                f(r["sentences_per_s"]),
                f(r["tokens_per_s"], 0),
                f(r["mean_batch_size"]),
                f"{100 * r['padding_fraction']:.1f}%",
                f(gf, 2),
                f"{100 * gf / peak:.1f}%" if peak and fpt else "–",
            ]
        )
    out += table(
        [
            "queue depth",
            "workers",
            "intra-op threads",
            "max batch tokens",
            "sentences/s",
            "tokens/s",
            "mean batch",
            "padding",
            "model GFLOP/s",
            "of matmul peak",
        ],
        rows,
    )
    sw = limit.get("batch_size_sweep", [])
    if sw:
        out += "\nFixed first-come batches (context; first config):\n\n" + table(
            ["batch size", "sentences/s", "tokens/s", "padding"],
            [
                [
                    r["batch_size"],
                    f(r["sentences_per_s"]),
                    f(r["tokens_per_s"], 0),
                    f"{100 * r['padding_fraction']:.1f}%",
                ]
                for r in sw
            ],
        )
    for s in (limit.get("single_short_by_threads") or {"": limit.get("single_short")}).values():
        if not s:
            continue
        out += (
            f"\nBare forward pass of one short sentence (batch 1, {s['threads']} thread(s), 200 "
            f"of the corpus' short texts, mean {s['mean_tokens']:.1f} tokens, "
            f"{s['samples']} samples): p50 **{s['forward_ms']['p50']:.3f} ms**, p90 "
            f"{s['forward_ms']['p90']:.3f} ms, p99 {s['forward_ms']['p99']:.3f} ms; with "
            f"tokenization p50 {s['tokenize_forward_ms']['p50']:.3f} ms. Tokenization alone: "
            f"{f(limit['tokenization_texts_per_s_1thread'], 0)} texts/s on one thread.\n"
        )
    return out + "\n"


def closed_rows(points: list[dict]) -> list[list]:
    rows = []
    for p in points:
        rows.append(
            [
                p["concurrency"],
                f(p["ok_per_s"]),
                f(p["sentences_per_s"]),
                f(p["p50_ms"], 2),
                f(p["p90_ms"], 2),
                f(p["p99_ms"], 2),
                p["errors"],
                f(p.get("mean_batch_size")),
                f(p["server_cpu_s_per_s"], 2),
                f(p["client_cpu_s_per_s"], 2),
            ]
        )
    return rows


CLOSED_HDR = [
    "concurrency",
    "req/s",
    "sentences/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "errors",
    "mean batch",
    "server CPU (cores)",
    "oha CPU (cores)",
]


def section_compare(compare: dict | None) -> str:
    out = "## 2-3. The service under load, with its Python peers in the same run\n\n"
    if not compare:
        return out + "(not run)\n\n"
    cfg = compare.get("config", {})
    out += (
        f"Each point runs {compare['seconds_per_point']:.0f} s of `oha` against one server at a "
        "time (the others stopped), after a 2 s warm-up; bodies are drawn at random from "
        "`bench/results/bodies/mixed.jsonl` (one corpus text per request). Latencies are of "
        "successful requests. Mean batch size is Δ`aft_batch_size_sum` / "
        "Δ`aft_batch_size_count` from `/metrics` (the peers expose the same two names). "
        "Server and oha CPU are cores used (CPU seconds per second) from /proc and "
        "getrusage; both share the same 2 CPUs.\n\n"
    )
    out += table(["server", "configuration"], [[LABEL[k], v] for k, v in cfg.items()]) + "\n"
    out += "### Closed loop (concurrency sweep)\n\n"
    for k in KINDS:
        if k in compare["closed"]:
            out += f"**{LABEL[k]}**\n\n" + table(CLOSED_HDR, closed_rows(compare["closed"][k]))
            out += "\n"
    out += "![throughput and latency vs concurrency](bench-closed.png)\n\n"
    out += "### Open loop (constant rate, oha -q with --latency-correction, 256 connections)\n\n"
    out += (
        "The same absolute rates for every server: fractions of aft-serve's measured "
        "capacity, plus half of the plain server's capacity. Latency includes time a request "
        "waited for its scheduled send (no coordinated omission).\n\n"
    )
    for k in KINDS:
        if k in compare.get("open", {}):
            rows = []
            for p in compare["open"][k]:
                rows.append(
                    [
                        f(p["rate"]),
                        f(p["ok_per_s"]),
                        f(p["sentences_per_s"]),
                        f(p["p50_ms"], 2),
                        f(p["p90_ms"], 2),
                        f(p["p99_ms"], 2),
                        p["errors"],
                        f(p.get("mean_batch_size")),
                        f(p["server_cpu_s_per_s"], 2),
                    ]
                )
            out += (
                f"**{LABEL[k]}**\n\n"
                + table(
                    [
                        "offered req/s",
                        "req/s",
                        "sentences/s",
                        "p50 ms",
                        "p90 ms",
                        "p99 ms",
                        "errors",
                        "mean batch",
                        "server CPU",
                    ],
                    rows,
                )
                + "\n"
            )
    out += "![latency vs throughput](bench-latency-throughput.png)\n\n"
    ss = compare.get("single_short", {})
    if ss:
        out += (
            "### One short sentence at concurrency 1\n\n"
            + table(
                ["server", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"],
                [
                    [
                        LABEL[k],
                        f(v["ok_per_s"]),
                        f(v["p50_ms"], 3),
                        f(v["p90_ms"], 3),
                        f(v["p99_ms"], 3),
                        v["errors"],
                    ]
                    for k, v in ss.items()
                ],
            )
            + "\n"
        )
    return out


def section_config(config: dict | None) -> str:
    out = "## 4. Configuration study (aft-serve)\n\n"
    if not config:
        return out + "(not run)\n\n"
    rows = []
    for r in config["runs"]:
        rows.append(
            [
                r["workers"],
                r["intra_op_threads"],
                r["max_batch_tokens"],
                f(r["c1_short"]["p50_ms"], 2),
                f(r["c16"]["ok_per_s"]),
                f(r["c16"]["p99_ms"], 1),
                f(r["c256"]["ok_per_s"]),
                f(r["c256"]["p99_ms"], 1),
                f(r["c256"].get("mean_batch_size")),
                r["c1_short"]["errors"] + r["c16"]["errors"] + r["c256"]["errors"],
                f(r["rss_kib"] / 1024, 0),
            ]
        )
    out += (
        f"Each cell {config['seconds_per_point']:.0f} s; c1 = one short sentence per request "
        "at concurrency 1; c16/c256 = the mixed corpus at concurrency 16/256. The harness "
        "first runs workers x intra-op threads at max batch tokens 8192 and keeps the highest "
        "c256 throughput (within 3% of it, the lowest c1 p50), then tries max batch tokens "
        "2048 and 16384 with that pair (keeping 8192 unless another is more than 3% faster). "
        "Every later part runs aft-serve with this choice.\n\n"
    )
    out += table(
        [
            "workers",
            "intra-op threads",
            "max batch tokens",
            "c1 p50 ms",
            "c16 req/s",
            "c16 p99 ms",
            "c256 req/s",
            "c256 p99 ms",
            "c256 mean batch",
            "errors",
            "RSS MiB",
        ],
        rows,
    )
    rec = config.get("recommended")
    if rec:
        d = config.get("defaults_before") or {}
        out += (
            f"\n**Choice: `--workers {rec['workers']} --intra-op-threads "
            f"{rec['intra_op_threads']} --max-batch-tokens {rec['max_batch_tokens']}`** "
            f"(built-in defaults when this ran: workers {d.get('workers')}, intra-op threads "
            f"{d.get('intra_op_threads_flag_default')} (0 = CPUs / workers = "
            f"{d.get('intra_op_threads')}), max batch tokens "
            f"{d.get('max_batch_tokens')}).\n"
        )
    return out + "\n"


def section_overload_soak(overload: dict | None, soak: dict | None) -> str:
    out = "## 5. Overload and soak\n\n"
    if overload:
        d = overload["during"]
        ok = d.get("latency_ok_ms") or {}
        rej = d.get("latency_rejected_ms") or {}
        out += (
            f"Overload: open loop at **3x capacity** ({f(overload['offered_req_s'])} req/s "
            f"offered, capacity {f(overload['capacity_req_s'])} req/s from the closed-loop "
            f"sweep) for {f(overload['seconds'], 0)} s over {overload['connections']} "
            f"connections, server flags `{' '.join(overload['server_args'])}` (a queue of at "
            "most that many waiting inputs; past it, 429). Latencies measured from each "
            "request's send (no latency correction: this is the admitted requests' latency, "
            "not a client backlog).\n\n"
        )
        out += (
            table(
                ["", "value"],
                [
                    [
                        "status codes",
                        ", ".join(f"{k}: {v:,}" for k, v in sorted(d["status_codes"].items())),
                    ],
                    ["transport errors", d["transport_errors"] or "none"],
                    ["requests cut off by the end of the run", d.get("aborted_at_deadline", 0)],
                    ["200s per second", f(d["ok_per_s"])],
                    [
                        "200 latency p50 / p90 / p99 / max-ish (p99.9) ms",
                        " / ".join(
                            f(1e3 * ok[k], 1) if ok.get(k) is not None else "–"
                            for k in ("p50", "p90", "p99", "p99.9")
                        ),
                    ],
                    [
                        "429 latency p50 / p99 ms",
                        " / ".join(
                            f(1e3 * rej[k], 2) if rej.get(k) is not None else "–"
                            for k in ("p50", "p99")
                        ),
                    ],
                    ["mean batch size during overload", f(d.get("mean_batch_size"))],
                    [
                        "queue depth / in flight 3 s after",
                        f"{overload['after_idle']['queue_depth']} / "
                        f"{overload['after_idle']['in_flight']}",
                    ],
                    [
                        "before: c=16 req/s, p99 ms",
                        f"{f(overload['before']['ok_per_s'])}, "
                        f"{f(overload['before']['p99_ms'], 1)}",
                    ],
                    [
                        "after: c=16 req/s, p99 ms, errors",
                        f"{f(overload['after']['ok_per_s'])}, {f(overload['after']['p99_ms'], 1)}, "
                        f"{overload['after']['errors']}",
                    ],
                ],
            )
            + "\n"
        )
    else:
        out += "Overload: (not run)\n\n"
    if soak:
        r = soak["result"]
        out += (
            f"Soak: open loop at **70% of capacity** ({f(soak['rate'])} req/s) for "
            f"{f(soak['seconds'] / 60, 1)} min, RSS (VmRSS) sampled every 5 s; 'after warm-up' "
            f"is the first sample at or after {f(soak['warmup_s'], 0)} s.\n\n"
        )
        out += (
            table(
                ["", "value"],
                [
                    ["req/s served", f(r["ok_per_s"])],
                    [
                        "p50 / p90 / p99 ms",
                        f"{f(r['p50_ms'], 2)} / {f(r['p90_ms'], 2)} / {f(r['p99_ms'], 2)}",
                    ],
                    [
                        "errors",
                        f"{r['errors']} ({r['status_codes']}, transport "
                        f"{r['transport_errors'] or 'none'})",
                    ],
                    [
                        "RSS after warm-up / at end",
                        f"{soak['rss_after_warmup_kib'] / 1024:.1f} / "
                        f"{soak['rss_end_kib'] / 1024:.1f} MiB",
                    ],
                    ["RSS change", f"{100 * soak['rss_growth']:+.2f}%"],
                    ["mean batch size", f(r.get("mean_batch_size"))],
                ],
            )
            + "\n![RSS during the soak](bench-soak.png)\n\n"
        )
    else:
        out += "Soak: (not run)\n\n"
    return out


def section_profile(profile: dict | None) -> str:
    out = "## Where the cycles go (aft-serve at saturation)\n\n"
    if not profile:
        return out + "(not run)\n\n"
    r = profile["load"]
    out += (
        f"Closed loop, concurrency 256, mixed corpus, {f(profile['seconds'], 0)} s: "
        f"{f(r['ok_per_s'])} req/s. Server CPU {f(r['server_cpu_s_per_s'], 2)} cores, oha "
        f"{f(r['client_cpu_s_per_s'], 2)} cores.\n\n"
    )
    stages = [
        [
            "tokenization",
            f(r.get("tokenization_mean_ms"), 3),
            f(r.get("tokenization_busy_s_per_s"), 3),
        ],
        ["queue wait", f(r.get("queue_mean_ms"), 2), f(r.get("queue_busy_s_per_s"), 2)],
        [
            "inference (per batch)",
            f(r.get("inference_mean_ms"), 2),
            f(r.get("inference_busy_s_per_s"), 3),
        ],
        ["whole request", f(r.get("request_mean_ms"), 2), f(r.get("request_busy_s_per_s"), 2)],
    ]
    out += (
        "Stage times from `/metrics` (histogram _sum/_count deltas):\n\n"
        + table(["stage", "mean ms", "seconds per second (sum of time in stage)"], stages)
        + "\n"
    )
    th = profile.get("threads", {})
    if th:
        total = sum(th.values()) or 1
        out += (
            "Server CPU by thread name over the server's life (/proc/PID/task):\n\n"
            + table(
                ["thread", "CPU s", "share"],
                [[k, f(v, 1), f"{100 * v / total:.1f}%"] for k, v in list(th.items())[:10]],
            )
            + "\n"
        )
    p = profile.get("perf")
    if p:
        out += (
            "`perf record -e cpu-clock -a -g` (software clock: this VM exposes no hardware "
            "counters), whole machine, by process and library:\n\n"
        )
        out += (
            table(["share", "process / library"], [[f"{a}%", b] for a, b in p["by_comm_dso"][:15]])
            + "\n"
        )
        out += (
            "Top symbols:\n\n"
            + table(
                ["share", "process / library / symbol"],
                [[f"{a}%", b.replace("|", "\\|")[:140]] for a, b in p["by_symbol"][:25]],
            )
            + "\n"
        )
    return out


# ----------------------------------------------------------------------------- plots


def plots(compare: dict | None, soak: dict | None) -> None:
    if compare:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for k in KINDS:
            pts = compare["closed"].get(k)
            if not pts:
                continue
            c = [p["concurrency"] for p in pts]
            ax1.plot(c, [p["sentences_per_s"] for p in pts], "o-", color=COLOR[k], label=LABEL[k])
            ax2.plot(c, [p["p99_ms"] for p in pts], "o-", color=COLOR[k], label=f"{k} p99")
            ax2.plot(
                c, [p["p50_ms"] for p in pts], "o--", color=COLOR[k], alpha=0.6, label=f"{k} p50"
            )
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients (closed loop)")
            ax.grid(alpha=0.3)
        ax1.set_ylabel("sentences/s")
        ax1.set_title("Throughput vs concurrency")
        ax2.set_yscale("log")
        ax2.set_ylabel("latency ms (log)")
        ax2.set_title("Latency vs concurrency")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-closed.png", dpi=110)
        plt.close(fig)

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for k in KINDS:
            pts = compare["closed"].get(k)
            if pts:
                ax1.plot(
                    [p["ok_per_s"] for p in pts],
                    [p["p99_ms"] for p in pts],
                    "o-",
                    color=COLOR[k],
                    label=f"{LABEL[k]} p99",
                )
                ax1.plot(
                    [p["ok_per_s"] for p in pts],
                    [p["p50_ms"] for p in pts],
                    "o--",
                    color=COLOR[k],
                    alpha=0.6,
                    label=f"{k} p50",
                )
            pts = compare.get("open", {}).get(k)
            if pts:
                ax2.plot(
                    [p["rate"] for p in pts],
                    [p["p99_ms"] for p in pts],
                    "o-",
                    color=COLOR[k],
                    label=f"{LABEL[k]} p99",
                )
                ax2.plot(
                    [p["rate"] for p in pts],
                    [p["p50_ms"] for p in pts],
                    "o--",
                    color=COLOR[k],
                    alpha=0.6,
                    label=f"{k} p50",
                )
        ax1.set_title("Closed loop: latency vs achieved throughput")
        ax1.set_xlabel("requests/s served")
        ax2.set_title("Open loop: latency vs offered rate")
        ax2.set_xlabel("requests/s offered")
        for ax in (ax1, ax2):
            ax.set_yscale("log")
            ax.set_ylabel("latency ms (log)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-latency-throughput.png", dpi=110)
        plt.close(fig)
    if soak:
        s = soak["rss_samples"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([x["t"] for x in s], [x["rss_kib"] / 1024 for x in s], "-", color="tab:blue")
        ax.axvline(soak["warmup_s"], color="grey", ls="--", lw=1)
        ax.set_xlabel("seconds")
        ax.set_ylabel("VmRSS MiB")
        ax.set_title(f"aft-serve RSS at {soak['rate']:.0f} req/s (70% of capacity)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(DOCS / "bench-soak.png", dpi=110)
        plt.close(fig)


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--status",
        default=os.environ.get("AFT_BENCH_STATUS", ""),
        help="a line shown under the title (e.g. PROVISIONAL ...)",
    )
    a = ap.parse_args()
    limit, compare, config = load("limit"), load("compare"), load("config")
    overload, soak, profile = load("overload"), load("soak"), load("profile")
    DOCS.mkdir(exist_ok=True)
    plots(compare, soak)
    head, _ = headline(limit, compare, overload, soak)
    analysis = ROOT / "bench" / "analysis.md"
    parts = [
        "# Benchmarks\n\n",
        "<!-- Generated by bench/report.py from bench/results/*.json; edit bench/analysis.md "
        "for the prose. -->\n\n",
    ]
    if a.status:
        parts.append(f"> **{a.status}**\n\n")
    if a.quick:
        parts.append("> **Quick (dry-run) numbers: short points, not for quoting.**\n\n")
    parts += [
        "Reproduce every table and plot here with one command (about 40 minutes on 2 cores):\n\n"
        "```sh\nbench/run-all            # or: bench/run-all --quick (a 6-minute dry run)\n```\n\n"
        "Parts: `bench/run-all limit|compare|config|profile|overload|soak|report`. Raw results: "
        "`bench/results/*.json` (git-ignored).\n\n",
        "## Headline (ratios from one run)\n\n",
        head,
        "\n",
    ]
    if analysis.exists():
        parts.append(analysis.read_text().rstrip() + "\n\n")
    parts += [
        section_machine(compare, limit),
        section_method(compare),
        section_limit(limit),
        section_compare(compare),
        section_config(config),
        section_overload_soak(overload, soak),
        section_profile(profile),
    ]
    (DOCS / "BENCHMARKS.md").write_text("".join(parts))
    print(f"wrote {DOCS / 'BENCHMARKS.md'}")


def section_method(compare: dict | None) -> str:
    mode = (compare or {}).get("plain_mode", "async")
    check = (compare or {}).get("plain_mode_check", {})
    style = {
        "async": "inside an `async def` handler, so forwards run one at a time on the event loop",
        "sync": "inside a plain `def` handler, which FastAPI runs in its thread pool, so "
        "forwards of concurrent requests overlap",
    }[mode]
    checked = ""
    if check:
        checked = (
            " The harness runs both handler styles for 4 s at concurrency 16 first and "
            "keeps the faster ("
            + ", ".join(f"{m}: {v['ok_per_s']:.0f} req/s" for m, v in check.items())
            + ")."
        )
    return (
        "## Method\n\n"
        "- **Corpus**: `bench/corpus/texts.jsonl`, 2,000 fixed English texts from WordNet 3.0 "
        "glosses and usage examples (Debian `wordnet-base`; built by "
        "`bench/corpus/make_corpus.py`): 1,000 short (6-10 tokens), 700 medium (24-36), 300 "
        "long (100-140). One text per request, so the load is 50% short, 35% medium, 15% long "
        "by request (about 31 tokens per request on average).\n"
        "- **Load generator**: [`oha`](https://crates.io/crates/oha), installed by "
        "`bench/run-all` with `cargo install --locked`. It does both a closed loop (`-c N`) "
        "and an open loop at a constant rate with coordinated-omission correction (`-q R "
        "--latency-correction`), draws each request's body from a file of JSON lines (`-Z`), "
        "and reports JSON with status codes and success-only latency percentiles. `wrk` "
        "(Debian) cannot hold a constant rate and `wrk2` is not packaged for Debian 12.\n"
        "- **Peers**: `bench/peers/plain_server.py` (FastAPI + uvicorn, `torch.jit.load`, one "
        f"forward pass per request {style};{checked}) and "
        "`bench/peers/batched_server.py` (the same plus an asyncio queue: one task takes every "
        "waiting input, up to 64 sequences / 8,192 padded tokens, and runs one forward on a "
        "worker thread). Both: 1 uvicorn worker, `torch.set_num_threads(2)`, the same "
        "tokenizer and the same `/v1/embed` JSON. Same corpus, same concurrency points and "
        "rates, one server at a time.\n"
        "- **Everything runs on the same 2 CPUs**, load generator included; the oha CPU "
        "column says how much of them it took.\n"
        "- **Errors** are non-200 responses plus transport errors (timeouts, resets); requests "
        "cut off by the end of a timed run are not errors.\n\n"
    )


if __name__ == "__main__":
    main()
