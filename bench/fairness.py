"""Fair scheduling benchmark: short-request latency while heavy requests run, FIFO vs fair.

For each `--scheduling` policy given (default: fifo, then fair), one aft-serve process on
127.0.0.1 with default flags (plus `--server-arg`s) and four measurements:

  batch   the time of one full batch at the server's --max-batch-tokens: one request of
          max_batch_tokens / max_seq_len inputs of max_seq_len tokens, alone, `--batch-reps`
          times; its x-inference-time header (the forward pass) and client-side latency
  alone   short requests one after another, nothing else running: latency p50/p99/max
  heavy   `--heavy-clients` clients, each sending `--heavy-requests` heavy requests back to back
          (`--heavy-inputs` texts truncated to max_seq_len tokens each; 512 x 256 tokens by
          default with aft-mini): throughput
  mixed   the same heavy stream plus short requests on an open loop (`--probe-rate` per second,
          each sent on time whatever the others are doing) for as long as the heavy stream runs:
          short-request latency p50/p99/max and total throughput

Throughput = tokens the model served (every completed request's usage.prompt_tokens) / wall
time from the phase's first request to its last answer. Targets (issue 16): under `fair`, the
short p99 during the heavy stream <= 3x one full batch; mixed throughput within 5% of fifo's.

    python bench/fairness.py                         # full size (aft-mini, ~5 minutes per policy)
    python bench/fairness.py --heavy-inputs 128 --heavy-requests 1 --alone-probes 40 \
        --batch-reps 5                               # a quick check that it works
    python bench/fairness.py --markdown              # also print the docs/BENCHMARKS.md section

Results: bench/results/fairness.json (git-ignored). All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from harness import CORPUS, HOST, ROOT
from harness.results import cpu
from harness.serve_process import ServeProcess

RESULTS = Path(os.environ.get("AFT_BENCH_RESULTS", ROOT / "bench" / "results"))


def log(msg: str) -> None:
    print(f"[fairness {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def default_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "aft-serve"


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Answer:
    status: int
    seconds: float
    tokens: int
    queue_ms: float
    inference_ms: float


def request(port: int, path: str, body: bytes, timeout: float = 600.0) -> Answer:
    """POSTs a JSON body on a fresh connection and times it, reading the whole answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("POST", path, body, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        seconds = time.perf_counter() - started
        tokens = 0
        if resp.status == 200:
            tokens = json.loads(data)["usage"]["prompt_tokens"]
        return Answer(
            status=resp.status,
            seconds=seconds,
            tokens=tokens,
            queue_ms=float(resp.getheader("x-queue-time") or 0),
            inference_ms=float(resp.getheader("x-inference-time") or 0),
        )
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return json.loads(resp.read())
    finally:
        conn.close()


# Server-side counters each phase reports the change of.
COUNTERS = {
    "batches": "aft_batch_size_count",
    "batched_inputs": "aft_batch_size_sum",
    "padded_tokens": "aft_batch_tokens_sum",
    "forward_s": "aft_inference_duration_seconds_sum",
    "oldest_turns": "aft_oldest_turns_total",
}


def counters(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    # Summed over label sets (the model label, and any other): one model is served here.
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.partition(" ")
        family = series.split("{", 1)[0]
        values[family] = values.get(family, 0.0) + float(value)
    return {k: values.get(name, float("nan")) for k, name in COUNTERS.items()}


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the server did during a phase: batches, inputs, padded tokens, forward time."""
    d = {k: after[k] - before[k] for k in before}
    d["mean_batch_size"] = d["batched_inputs"] / d["batches"] if d["batches"] else 0.0
    return d


def serve(binary: Path, model_dir: Path, args: list[str], log_path: Path) -> ServeProcess:
    """aft-serve on 127.0.0.1 and a free port with its defaults and `args` only (the caller's
    AFT_* variables left out); stopped with SIGTERM on leaving the `with` block."""
    flags = ["--model-dir", str(model_dir), "--log-level", "warn", *args]
    return ServeProcess(
        args=flags, binary=binary, log_path=log_path, ready_timeout=180, own_aft_env=False
    )


# ----------------------------------------------------------------------------- workload


def corpus(bucket: str) -> list[str]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows if r["bucket"] == bucket]


def long_text(longs: list[str], i: int) -> str:
    """Three long corpus texts (100-140 tokens each): over any max_seq_len up to 300, so the
    server truncates every one to exactly max_seq_len tokens."""
    return " ".join(longs[(i + k * 97) % len(longs)] for k in range(3))


def heavy_bodies(count: int, inputs: int) -> list[bytes]:
    longs = corpus("long")
    return [
        json.dumps(
            {
                "input": [long_text(longs, r * inputs + i) for i in range(inputs)],
                "encoding_format": "base64",
            }
        ).encode()
        for r in range(count)
    ]


def short_bodies() -> list[bytes]:
    return [json.dumps({"inputs": t}).encode() for t in corpus("short")]


def quantiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"n": 0}

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p * (len(ms) - 1))))]

    return {"n": len(ms), "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": ms[-1]}


@dataclass
class Phase:
    """Answers of one phase, with its wall time."""

    started: float = 0.0
    ended: float = 0.0
    heavy: list[Answer] = field(default_factory=list)
    short: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict:
        answers = self.heavy + self.short
        errors = sum(a.status != 200 for a in answers)
        statuses: dict[str, int] = {}
        for a in answers:
            statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
        tokens = sum(a.tokens for a in answers)
        wall = self.ended - self.started
        return {
            "wall_s": wall,
            "heavy_requests": len(self.heavy),
            "short_requests": len(self.short),
            "errors": errors,
            "statuses": statuses,
            "tokens": tokens,
            "tokens_per_s": tokens / wall if wall > 0 else 0.0,
            "short_latency": quantiles([a.seconds for a in self.short if a.status == 200]),
            "short_queue_ms_p99": quantiles([a.queue_ms / 1000 for a in self.short]).get("p99_ms"),
            "heavy_latency": quantiles([a.seconds for a in self.heavy if a.status == 200]),
        }


def full_batch(port: int, info: dict, reps: int) -> dict:
    seq_len = info["limits"]["max_seq_len"]
    n = max(1, min(info["limits"]["max_batch_tokens"] // seq_len, info["limits"]["max_batch_size"]))
    longs = corpus("long")
    times, forwards = [], []
    for r in range(reps):
        body = json.dumps({"input": [long_text(longs, r * n + i) for i in range(n)]}).encode()
        a = request(port, "/v1/embeddings", body)
        if a.status != 200 or a.tokens != n * seq_len:
            raise RuntimeError(f"full batch: status {a.status}, {a.tokens} tokens")
        times.append(a.seconds * 1000)
        forwards.append(a.inference_ms)
    return {
        "inputs": n,
        "tokens": n * seq_len,
        "reps": reps,
        "forward_ms_median": statistics.median(forwards),
        "forward_ms_min": min(forwards),
        "request_ms_median": statistics.median(times),
    }


def short_alone(port: int, bodies: list[bytes], count: int) -> dict:
    phase = Phase(started=time.perf_counter())
    for i in range(count):
        phase.short.append(request(port, "/v1/embed", bodies[i % len(bodies)]))
    phase.ended = time.perf_counter()
    return phase.summary()


def heavy_stream(
    port: int, heavy: list[bytes], clients: int, probes: list[bytes] | None, rate: float
) -> dict:
    """`clients` threads send their share of `heavy` back to back; with `probes`, short requests
    go out every 1/rate s on an open loop until the heavy stream ends."""
    phase = Phase()

    def heavy_client(c: int) -> None:
        for body in heavy[c::clients]:
            a = request(port, "/v1/embeddings", body)
            with phase.lock:
                phase.heavy.append(a)

    def probe(body: bytes) -> None:
        a = request(port, "/v1/embed", body)
        with phase.lock:
            phase.short.append(a)

    phase.started = time.perf_counter()
    threads = [threading.Thread(target=heavy_client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    if probes:
        # Leaving the pool waits for the probes still in flight.
        with ThreadPoolExecutor(max_workers=256) as pool:
            # The first probe leaves once the heavy requests had time to be admitted.
            k, start = 0, phase.started + 0.2
            while any(t.is_alive() for t in threads):
                delay = start + k / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(min(delay, 0.05))
                    continue
                pool.submit(probe, probes[k % len(probes)])
                k += 1
    for t in threads:
        t.join()
    phase.ended = time.perf_counter()
    return phase.summary()


def run_policy(a: argparse.Namespace, policy: str) -> dict:
    args = ["--scheduling", policy, *a.server_arg]
    log_path = RESULTS / "logs" / f"fairness-{policy}.log"
    with serve(a.binary, a.model_dir, args, log_path) as server:
        port = urlparse(server.url).port
        info = get_json(port, "/info")
        if info.get("scheduling") != policy:
            raise RuntimeError(f"the server reports scheduling={info.get('scheduling')}")
        shorts = short_bodies()
        for body in shorts[:20]:  # warm-up
            request(port, "/v1/embed", body)
        log(f"{policy}: one full batch x {a.batch_reps}")
        batch = full_batch(port, info, a.batch_reps)
        log(f"{policy}: {a.alone_probes} short requests alone")
        alone = short_alone(port, shorts, a.alone_probes)
        count = a.heavy_clients * a.heavy_requests
        heavy = heavy_bodies(count, a.heavy_inputs)
        log(f"{policy}: heavy stream alone ({count} x {a.heavy_inputs} inputs)")
        before = counters(port)
        heavy_only = heavy_stream(port, heavy, a.heavy_clients, None, a.probe_rate)
        between = counters(port)
        heavy_only["server"] = server_side(before, between)
        log(f"{policy}: heavy stream + short requests at {a.probe_rate}/s")
        mixed = heavy_stream(port, heavy, a.heavy_clients, shorts, a.probe_rate)
        mixed["server"] = server_side(between, counters(port))
    result = {
        "policy": policy,
        "full_batch": batch,
        "alone": alone,
        "heavy_only": heavy_only,
        "mixed": mixed,
        "max_seq_len": info["limits"]["max_seq_len"],
        "max_batch_tokens": info["limits"]["max_batch_tokens"],
    }
    expected = a.heavy_inputs * info["limits"]["max_seq_len"] * count
    if heavy_only["tokens"] != expected:
        log(f"warning: the heavy requests carried {heavy_only['tokens']} tokens, not {expected}")
    during = mixed["short_latency"]
    log(
        f"{policy}: batch {batch['forward_ms_median']:.1f} ms; short alone p99 "
        f"{alone['short_latency'].get('p99_ms', 0):.1f} ms; during heavy p50/p99/max "
        f"{during.get('p50_ms', 0):.1f}/{during.get('p99_ms', 0):.1f}"
        f"/{during.get('max_ms', 0):.1f} ms; throughput heavy-only "
        f"{heavy_only['tokens_per_s']:.0f}, mixed {mixed['tokens_per_s']:.0f} tokens/s"
    )
    return result


# ----------------------------------------------------------------------------- report


def f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def section(results: dict) -> str:
    """The docs/BENCHMARKS.md section for a results/fairness.json."""
    runs = {r["policy"]: r for r in results["runs"]}
    cfg = results["config"]
    rows = []
    for policy, r in runs.items():
        alone, mixed = r["alone"]["short_latency"], r["mixed"]["short_latency"]
        rows.append(
            f"| {policy} | {f(r['full_batch']['forward_ms_median'])} | "
            f"{f(alone.get('p50_ms'))} / {f(alone.get('p99_ms'))} / {f(alone.get('max_ms'))} | "
            f"{f(mixed.get('p50_ms'))} / {f(mixed.get('p99_ms'))} / {f(mixed.get('max_ms'))} | "
            f"{mixed.get('n', 0)} | {f(r['heavy_only']['tokens_per_s'], 0)} | "
            f"{f(r['mixed']['tokens_per_s'], 0)} | "
            f"{r['heavy_only']['errors'] + r['mixed']['errors'] + r['alone']['errors']} |"
        )
    lines = [
        "## Fair scheduling: short requests during heavy ones\n",
        f"Command: `{results['command']}`. {cfg['heavy_clients']} client(s) each send "
        f"{cfg['heavy_requests']} heavy request(s) back to back ({cfg['heavy_inputs']} texts "
        f"truncated to {results['runs'][0]['max_seq_len']} tokens each); short requests (one "
        f"short corpus text) go out at {cfg['probe_rate']}/s on an open loop while they run. "
        f"Default flags (`--max-batch-tokens {results['runs'][0]['max_batch_tokens']}`) plus "
        f"`--scheduling`; model `{cfg['model_dir']}`; {results['machine']}.\n",
        "| scheduling | one full batch (ms) | short alone p50 / p99 / max (ms) | short during "
        "heavy p50 / p99 / max (ms) | short requests | throughput, heavy only (tokens/s) | "
        "throughput, mixed (tokens/s) | errors |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if "fair" in runs and "fifo" in runs:
        fair, fifo = runs["fair"], runs["fifo"]
        batch = fair["full_batch"]["forward_ms_median"]
        p99 = fair["mixed"]["short_latency"].get("p99_ms")
        ratio = fair["mixed"]["tokens_per_s"] / fifo["mixed"]["tokens_per_s"]
        ok_latency = p99 is not None and p99 <= 3 * batch
        ok_tput = ratio >= 0.95
        lines += [
            f"- Short p99 during heavy requests, fair: {f(p99)} ms = "
            f"{f(p99 / batch if p99 else None, 2)}x one full batch (target <= 3x): "
            f"{'met' if ok_latency else 'NOT met'}.",
            f"- Mixed throughput, fair / fifo: {ratio:.3f} (target >= 0.95): "
            f"{'met' if ok_tput else 'NOT met'}.",
            "- Server side, mixed phase (batches, mean batch size, forward seconds, starvation "
            "guard turns): "
            + "; ".join(
                f"{p} {f(s['batches'], 0)}, {f(s['mean_batch_size'])}, {f(s['forward_s'])}, "
                f"{f(s['oldest_turns'], 0)}"
                for p, s in ((p, runs[p]["mixed"]["server"]) for p in ("fifo", "fair"))
            )
            + ".",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, default=default_binary())
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "aft-mini")
    ap.add_argument(
        "--scheduling",
        default="fifo,fair",
        help="comma-separated policies to run, in order (fifo = before, fair = after)",
    )
    ap.add_argument("--heavy-inputs", type=int, default=512)
    ap.add_argument("--heavy-requests", type=int, default=3, help="per heavy client")
    ap.add_argument("--heavy-clients", type=int, default=2)
    ap.add_argument("--probe-rate", type=float, default=5.0, help="short requests per second")
    ap.add_argument("--alone-probes", type=int, default=200)
    ap.add_argument("--batch-reps", type=int, default=20)
    ap.add_argument(
        "--server-arg", action="append", default=[], help="extra aft-serve flag (repeatable)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "fairness.json")
    ap.add_argument("--markdown", action="store_true", help="print the docs section too")
    a = ap.parse_args()
    if not a.binary.exists():
        sys.exit(f"no aft-serve binary at {a.binary}; build it (cargo build --release --locked)")
    policies = [p.strip() for p in a.scheduling.split(",") if p.strip()]
    runs = [run_policy(a, p) for p in policies]
    results = {
        "command": "python bench/fairness.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu()['cpu']}, {platform.machine()}, {platform.platform()}",
        "cpu": cpu(),
        "config": {
            "model_dir": str(a.model_dir.resolve().relative_to(ROOT))
            if a.model_dir.resolve().is_relative_to(ROOT)
            else str(a.model_dir),
            "heavy_inputs": a.heavy_inputs,
            "heavy_requests": a.heavy_requests,
            "heavy_clients": a.heavy_clients,
            "probe_rate": a.probe_rate,
            "alone_probes": a.alone_probes,
            "batch_reps": a.batch_reps,
            "server_args": a.server_arg,
        },
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {a.out}")
    text = section(results)
    if a.markdown:
        print(text)


if __name__ == "__main__":
    main()
