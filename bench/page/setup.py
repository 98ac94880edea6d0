"""The page's opening and set-up sections: how to reproduce, the machine, the method."""

from __future__ import annotations

import json

from page.fmt import f, pct, table
from page.run import Run

PLAIN_STYLE = {
    "async": "inside an `async def` handler, so forwards run one at a time on the event loop",
    "sync": "inside a plain `def` handler, which FastAPI runs in its thread pool, so forwards of "
    "concurrent requests overlap",
}


def reproduce(run: Run) -> str:
    took = f"this run's parts took {run.minutes:.0f} minutes" if run.minutes else ""
    cpus = f" on the {run.nproc}-CPU machine below" if run.nproc and took else ""
    return (
        "Reproduce every table and plot here with one command"
        + (f" ({took}{cpus})" if took else "")
        + ":\n\n```sh\nbench/run-all            # or: bench/run-all --quick (a smoke run of "
        "the whole pipeline; it writes under bench/results/quick/, not docs/)\n```\n\n"
        "Parts: `bench/run-all limit|config|compare|profile|overload|soak|report`. Raw results: "
        "`bench/results/*.json` (git-ignored).\n\n"
    )


def machine(run: Run) -> str:
    out = "## Machine and versions\n\n"
    m, facts = run.machine, run.facts
    if not m:
        return out + "(no results)\n\n"
    pkgs = m.get("python_packages", {})
    model = facts.get("model", {})
    rows = [
        [
            "CPU",
            f"{run.cpu}; flags {', '.join(m.get('cpu_flags', []))}",
        ],
        ["memory", f"{m.get('mem_gib')} GiB"],
        ["kernel", m.get("kernel")],
        ["Rust", m.get("rustc")],
        ["load generator", m.get("oha")],
        [
            "Python / " + " / ".join(pkgs),
            " / ".join([m.get("python") or "–", *pkgs.values()]),
        ],
        [
            "load average when the load comparison began",
            ", ".join(f"{x:.2f}" for x in m.get("loadavg_before", [])),
        ],
        [
            "busiest processes when the load comparison began",
            "; ".join(m.get("top_processes_before", [])),
        ],
        ["run started (UTC), commit", f"{run.started}, {', '.join(run.commits)}"],
        [
            "model",
            f"{model.get('name')} ({model.get('dir')}), exported {model.get('created_at')}, "
            f"model.pt sha256 {str(model.get('model_pt_sha256'))[:12]}",
        ],
        ["model hyper-parameters", f"`{json.dumps(model.get('hyper_parameters'))}`"],
    ]
    t = (run.limit or {}).get("torch")
    if t:
        rows.append(
            [
                "libtorch",
                f"OpenMP {t.get('has_openmp')}, MKL {t.get('has_mkl')}, "
                f"oneDNN {t.get('has_mkldnn')}",
            ]
        )
    return out + table(["", ""], rows) + "\n"


def corpus_line(run: Run) -> str:
    c = run.facts.get("corpus")
    if not c:
        return "- **Corpus**: `bench/corpus/texts.jsonl` (no make-up recorded).\n"
    buckets = ", ".join(
        f"{f(b['texts'])} {name} ({b['min_tokens']}-{b['max_tokens']} tokens)"
        for name, b in c["buckets"].items()
    )
    shares = ", ".join(f"{pct(b['share'], 0)} {name}" for name, b in c["buckets"].items())
    return (
        f"- **Corpus**: `{c['file']}`, {f(c['texts'])} fixed English texts from WordNet 3.0 "
        "glosses and usage examples (Debian `wordnet-base`; built by "
        f"`bench/corpus/make_corpus.py`): {buckets}, counted with the bundle's tokenizer. One "
        f"text per request, so the load is {shares} by request (about "
        f"{c['mean_tokens']:.0f} tokens per request on average).\n"
    )


def method(run: Run) -> str:
    compare = run.compare or {}
    threads = run.facts.get("peer_threads")
    limits = compare.get("batched_peer_limits") or {}
    check = compare.get("plain_mode_check", {})
    style = PLAIN_STYLE.get(compare.get("plain_mode", ""), "")
    checked = ""
    if check:
        any_check = next(iter(check.values()))
        checked = (
            f" The harness runs both handler styles for {f(any_check['seconds'], 0)} s at "
            f"concurrency {any_check['concurrency']} first and keeps the faster for the plain "
            "peer (" + ", ".join(f"{m}: {v['ok_per_s']:.0f} req/s" for m, v in check.items()) + ")."
        )
    return (
        "## Method\n\n"
        + corpus_line(run)
        + "- **Load generator**: [`oha`](https://crates.io/crates/oha), installed by "
        "`bench/run-all` with `cargo install --locked`. It does both a closed loop (`-c N`) "
        "and an open loop at a constant rate with coordinated-omission correction (`-q R "
        "--latency-correction`), draws each request's body from a file of JSON lines (`-Z`), "
        "and reports JSON with status codes and success-only latency percentiles. `wrk` "
        "(Debian) cannot hold a constant rate and `wrk2` is not packaged for Debian 12.\n"
        "- **Peers**: `bench/peers/plain_server.py` (FastAPI + uvicorn, `torch.jit.load`, one "
        f"forward pass per request {style}) and "
        "`bench/peers/batched_server.py` (the same plus an asyncio queue: one task takes every "
        f"waiting input, up to {limits.get('max_batch_size')} sequences / "
        f"{f(limits.get('max_batch_tokens'))} padded tokens, and runs one forward on a worker "
        f"thread).{checked} Both: 1 uvicorn worker, `torch.set_num_threads({threads})`, the bundle "
        "loaded by `aft.bundle` (the same tokenizer and float32 model as the service) and the "
        "same `/v1/embed` JSON. Same corpus, same concurrency points and rates, one server at "
        "a time.\n"
        f"- **Everything runs on the same {run.nproc} CPUs**, load generator included; the oha "
        "CPU column says how much of them it took.\n"
        "- **Errors** are non-200 responses plus transport errors (timeouts, resets); requests "
        "cut off by the end of a timed run are not errors.\n\n"
    )
