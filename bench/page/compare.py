"""Sections 2-3: aft-serve and the Python peers under the same load."""

from __future__ import annotations

from page.fmt import KINDS, LABEL, f, table
from page.run import Run

PLAIN_STYLE = {
    "async": "async def, forward inline on the event loop",
    "sync": "def, run in FastAPI's thread pool",
}
LOAD_HEADER = ["req/s", "sentences/s", "p50 ms", "p90 ms", "p99 ms", "errors", "mean batch"]


def load_cells(p: dict) -> list:
    return [
        f(p["ok_per_s"]),
        f(p["sentences_per_s"]),
        f(p["p50_ms"], 2),
        f(p["p90_ms"], 2),
        f(p["p99_ms"], 2),
        p["errors"],
        f(p.get("mean_batch_size")),
        f(p["server_cpu_s_per_s"], 2),
    ]


def configurations(run: Run) -> dict[str, str]:
    """What each server ran as, from the flags and settings recorded in the results."""
    compare = run.compare or {}
    args = compare.get("server_args", {})
    threads = run.facts.get("peer_threads")
    limits = compare.get("batched_peer_limits") or {}
    check = next(iter(compare.get("plain_mode_check", {}).values()), {})
    uvicorn = f"uvicorn 1 worker, torch.set_num_threads({threads})"
    return {
        "aft-serve": "flags "
        + (" ".join(args.get("aft-serve", [])) or "(none: built-in defaults)")
        + "; other settings at their defaults",
        "python-plain": f"{uvicorn}, {PLAIN_STYLE.get(compare.get('plain_mode', ''), '?')} "
        f"(the better of the two styles at c={check.get('concurrency')})",
        "python-batched": f"{uvicorn}, asyncio batching ({limits.get('max_batch_size')} seq / "
        f"{f(limits.get('max_batch_tokens'))} padded tokens)",
    }


def section(run: Run) -> str:
    out = "## 2-3. The service under load, with its Python peers in the same run\n\n"
    compare = run.compare
    if not compare:
        return out + "(not run)\n\n"
    out += (
        f"Each point runs {f(compare['seconds_per_point'])} s of `oha` against one server at a "
        f"time (the others stopped), after a {f(compare['warmup_s'])} s warm-up; bodies are "
        "drawn at random from `bench/results/bodies/mixed.jsonl` (one corpus text per request). "
        "Latencies are of successful requests. Mean batch size is Δ`aft_batch_size_sum` / "
        "Δ`aft_batch_size_count` from `/metrics` (the peers expose the same two names). "
        "Server and oha CPU are cores used (CPU seconds per second) from /proc and "
        f"getrusage; both share the same {run.nproc} CPUs.\n\n"
    )
    cfg = configurations(run)
    out += table(["server", "configuration"], [[LABEL[k], cfg[k]] for k in KINDS]) + "\n"
    out += "### Closed loop (concurrency sweep)\n\n"
    header = ["concurrency", *LOAD_HEADER, "server CPU (cores)", "oha CPU (cores)"]
    for k in KINDS:
        pts = compare["closed"].get(k)
        if pts:
            rows = [[p["concurrency"], *load_cells(p), f(p["client_cpu_s_per_s"], 2)] for p in pts]
            out += f"**{LABEL[k]}**\n\n" + table(header, rows, run.cpu) + "\n"
    out += "![throughput and latency vs concurrency](bench-closed.png)\n\n"
    out += (
        "### Open loop (constant rate, oha -q with --latency-correction, "
        f"{compare.get('open_connections')} connections)\n\n"
        "The same absolute rates for every server: fractions of aft-serve's measured "
        "capacity, plus half of the plain server's capacity. Latency includes time a request "
        "waited for its scheduled send (no coordinated omission).\n\n"
    )
    header = ["offered req/s", *LOAD_HEADER, "server CPU"]
    for k in KINDS:
        pts = compare.get("open", {}).get(k)
        if pts:
            rows = [[f(p["rate"]), *load_cells(p)] for p in pts]
            out += f"**{LABEL[k]}**\n\n" + table(header, rows, run.cpu) + "\n"
    out += "![latency vs throughput](bench-latency-throughput.png)\n\n"
    short = compare.get("single_short", {})
    if short:
        rows = [
            [LABEL[k], f(v["ok_per_s"]), f(v["p50_ms"], 3), f(v["p90_ms"], 3), f(v["p99_ms"], 3)]
            + [v["errors"]]
            for k, v in short.items()
        ]
        out += "### One short sentence at concurrency 1\n\n"
        header = ["server", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"]
        out += table(header, rows, run.cpu) + "\n"
    return out
