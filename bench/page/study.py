"""Section 4: the configuration study of aft-serve."""

from __future__ import annotations

from page.fmt import f, pct, table
from page.run import Run


def section(run: Run) -> str:
    out = "## 4. Configuration study (aft-serve)\n\n"
    config = run.config
    if not config:
        return out + "(not run)\n\n"
    rows = []
    for r in config["runs"]:
        errors = r["c1_short"]["errors"] + r["c16"]["errors"] + r["c256"]["errors"]
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
                errors,
                f(r["rss_kib"] / 1024, 0),
            ]
        )
    grid_mbt = config["grid_max_batch_tokens"]
    others = sorted({r["max_batch_tokens"] for r in config["runs"]} - {grid_mbt})
    tie = 1 - config["tie_fraction"]
    out += (
        f"Each cell {f(config['seconds_per_point'])} s; c1 = one short sentence per request "
        "at concurrency 1; c16/c256 = the mixed corpus at concurrency 16/256. The harness "
        f"first runs workers x intra-op threads at max batch tokens {grid_mbt} and keeps the "
        f"highest c256 throughput (within {pct(tie, 0)} of it, the lowest c1 p50)"
        + (
            f", then tries max batch tokens {', '.join(map(str, others))} with that pair "
            f"(keeping {grid_mbt} unless another is more than {pct(tie, 0)} faster)"
            if others
            else ""
        )
        + ". Every later part runs aft-serve with this choice.\n\n"
    )
    header = ["workers", "intra-op threads", "max batch tokens", "c1 p50 ms", "c16 req/s"]
    header += ["c16 p99 ms", "c256 req/s", "c256 p99 ms", "c256 mean batch", "errors", "RSS MiB"]
    out += table(header, rows, run.cpu)
    rec = config.get("recommended")
    if rec:
        d = config.get("defaults_before") or {}
        out += (
            f"\n**Choice: `--workers {rec['workers']} --intra-op-threads "
            f"{rec['intra_op_threads']} --max-batch-tokens {rec['max_batch_tokens']}`** "
            f"(built-in defaults when this ran: workers {d.get('workers')}, intra-op threads "
            f"{d.get('intra_op_threads_flag_default')} (0 = CPUs / workers = "
            f"{d.get('intra_op_threads')}), max batch tokens {d.get('max_batch_tokens')}).\n"
        )
    return out + "\n"
