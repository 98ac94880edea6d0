"""Short-request latency with and without a concurrent stream of long documents (issue 15).

One aft-serve process on 127.0.0.1 serving an AFT-decay bundle that accepts 65,536 tokens, and
three phases:

  alone    short requests (one corpus sentence each) sent on an open loop at `--probe-rate` per
           second for `--seconds`, nothing else running: latency p50/p99/max
  stream   the same probes while `--stream-clients` clients each send `--doc-tokens`-token
           documents back to back (one document per request, run whole in one forward pass on
           the long-input lane): short-request p50/p99/max, and the documents' count, latency
           and server-side forward time
  nolane   (with --contrast) the stream phase again on a server started with --long-workers 0,
           where long documents take the short requests' worker in turn: what the lane avoids

With `--pairs N` the alone and stream phases alternate N times on the same server, and the ratio
is of the two phases' median p99s. Target (issue 24; issue 15 asked 2x): the short p99 in `stream`
at most 1.25x its value in `alone`.

The bundle: `--bundle DIR` (an AFT-decay bundle, e.g. the distilled long-context model), else a
random-weight AFT-decay encoder of aft-mini's shape (d_model 256, 4 layers, 384 out) exported with
max_seq_len 65,536: latency depends on the shape, not on the weights. `--quick` uses the tiny
test fixture (aft.fixtures.write_tiny_decay), 4,096-token documents and 5-second phases: a
check that the script works, not a measurement.

    python bench/long_docs.py --quick          # smoke test (about a minute)
    python bench/long_docs.py --contrast       # full size: 32,768-token documents, 60 s phases

Documents are corpus texts (bench/corpus/texts.jsonl) joined until they hold `--doc-tokens`
tokens, cut at a token boundary. Results: bench/results/long_docs.json (git-ignored). All traffic
goes to 127.0.0.1. Run on a quiet machine: the figures are only as good as its idleness.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from aft.bundle import load_manifest, load_tokenizer
from harness import ROOT, log
from harness.bundles import bundle_for_run
from harness.corpus import rows
from harness.metrics import family, scrape
from harness.results import cpu
from harness.serve_process import ServeProcess

RESULTS = Path(os.environ.get("AFT_BENCH_RESULTS", ROOT / "bench" / "results"))
LONG_FORWARD = family("aft_long_inference_duration_seconds")


@dataclass
class Answer:
    status: int
    seconds: float
    tokens: int


def post(base: str, body: bytes, timeout: float = 900.0) -> Answer:
    """POSTs a JSON body to /v1/embed on a fresh connection; times the whole answer."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("POST", "/v1/embed", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        seconds = time.perf_counter() - started
        tokens = json.loads(data)["usage"]["prompt_tokens"] if resp.status == 200 else 0
        return Answer(resp.status, seconds, tokens)
    finally:
        conn.close()


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"n": len(ms), "p50_ms": q[49], "p99_ms": q[98], "max_ms": ms[-1]}


# ----------------------------------------------------------------------------- bundle and texts


def document(bundle: Path, tokens: int) -> str:
    """Corpus texts joined until they hold `tokens` tokens (special ones included), cut there."""
    tok = load_tokenizer(bundle)
    tok.no_truncation()
    texts = [r["text"] for r in rows()]
    parts, have, i = [], 0, 0
    while have < tokens:
        text = texts[i % len(texts)]
        parts.append(text)
        have += len(tok.encode(text, add_special_tokens=False).ids)
        i += 1
    doc = " ".join(parts)
    enc = tok.encode(doc)
    # The last text token to keep: `tokens` minus [CLS] and [SEP].
    last = tokens - 2
    return doc[: enc.offsets[last][1]]


# ----------------------------------------------------------------------------- phases


def probes(base: str, rate: float, seconds: float, stop: threading.Event) -> list[Answer]:
    """Short requests on an open loop: each sent on time (its own thread), whatever the others
    are doing, for `seconds` or until `stop`."""
    shorts = [r["text"] for r in rows() if r["bucket"] == "short"]
    answers: list[Answer] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        a = post(base, json.dumps({"inputs": shorts[i % len(shorts)]}).encode())
        with lock:
            answers.append(a)

    threads = []
    started = time.perf_counter()
    i = 0
    while not stop.is_set() and time.perf_counter() - started < seconds:
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        i += 1
        time.sleep(max(0.0, started + i / rate - time.perf_counter()))
    for t in threads:
        t.join()
    return answers


def stream(base: str, doc: str, clients: int, stop: threading.Event, out: list[Answer]) -> None:
    """`clients` clients sending the document back to back until `stop`."""
    body = json.dumps({"inputs": doc, "truncate": False}).encode()
    lock = threading.Lock()

    def client() -> None:
        while not stop.is_set():
            a = post(base, body)
            with lock:
                out.append(a)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def short_phase(srv: ServeProcess, args) -> dict:
    answers = probes(srv.url, args.probe_rate, args.seconds, threading.Event())
    return summary(answers)


def stream_phase(srv: ServeProcess, args, doc: str) -> dict:
    before = scrape(srv.url)
    stop = threading.Event()
    docs: list[Answer] = []
    streamer = threading.Thread(target=stream, args=(srv.url, doc, args.stream_clients, stop, docs))
    streamer.start()
    # Let the first document reach the model before probing.
    time.sleep(args.settle)
    answers = probes(srv.url, args.probe_rate, args.seconds, threading.Event())
    stop.set()
    streamer.join()
    after = scrape(srv.url)
    out = summary(answers)
    ok_docs = [d for d in docs if d.status == 200]
    out["documents"] = {
        "completed": len(ok_docs),
        "failed": len(docs) - len(ok_docs),
        "tokens_each": ok_docs[0].tokens if ok_docs else 0,
        "latency": percentiles([d.seconds for d in ok_docs]),
        "long_lane_forward_s": after.get(LONG_FORWARD + "_sum", 0.0)
        - before.get(LONG_FORWARD + "_sum", 0.0),
        "long_lane_passes": after.get(LONG_FORWARD + "_count", 0.0)
        - before.get(LONG_FORWARD + "_count", 0.0),
    }
    return out


def summary(answers: list[Answer]) -> dict:
    ok = [a.seconds for a in answers if a.status == 200]
    return {"short": percentiles(ok), "short_failed": len(answers) - len(ok)}


def serve(bundle: Path, args, extra: list[str]) -> ServeProcess:
    flags = ["--model-dir", str(bundle), "--log-level", "warn", *args.server_arg, *extra]
    return ServeProcess(args=flags, binary=args.binary, ready_timeout=600)


# ----------------------------------------------------------------------------- main


@dataclass
class Plan:
    doc_tokens: int = 32768
    seconds: float = 60.0
    probe_rate: float = 10.0
    stream_clients: int = 2
    settle: float = 2.0


QUICK = Plan(doc_tokens=4096, seconds=5.0, probe_rate=10.0, stream_clients=1, settle=0.5)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, help="an AFT-decay bundle (default: see above)")
    p.add_argument("--quick", action="store_true", help="tiny fixture, short phases: smoke test")
    p.add_argument("--doc-tokens", type=int, help=f"tokens per document ({Plan.doc_tokens})")
    p.add_argument("--seconds", type=float, help=f"probe time per phase ({Plan.seconds})")
    p.add_argument("--probe-rate", type=float, help=f"short requests/s ({Plan.probe_rate})")
    p.add_argument("--stream-clients", type=int, help=f"document senders ({Plan.stream_clients})")
    p.add_argument("--contrast", action="store_true", help="also run with --long-workers 0")
    p.add_argument("--pairs", type=int, default=1, help="alone + stream phases, alternated")
    p.add_argument("--server-arg", action="append", default=[], help="extra aft-serve flag")
    p.add_argument("--binary", type=Path, help="another aft-serve build than the release binary")
    p.add_argument("--out", type=Path, default=RESULTS / "long_docs.json")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else Plan()
    overrides = {
        k: getattr(a, k)
        for k in ("doc_tokens", "seconds", "probe_rate", "stream_clients")
        if getattr(a, k) is not None
    }
    plan = replace(plan, **overrides)
    for k, v in asdict(plan).items():
        setattr(a, k, v)

    with tempfile.TemporaryDirectory(prefix="long-docs-") as tmp:
        bundle = bundle_for_run(a.bundle, a.quick, Path(tmp), origin="bench/long_docs.py")
        manifest = load_manifest(bundle)
        if manifest["max_seq_len"] < a.doc_tokens:
            raise SystemExit(f"{bundle} accepts {manifest['max_seq_len']} tokens < --doc-tokens")
        doc = document(bundle, a.doc_tokens)
        results = {
            "plan": asdict(plan),
            "bundle": {"dir": str(bundle), "name": manifest["name"], "model": manifest["model"]},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **cpu()},
            "load_average_before": os.getloadavg(),
        }
        # Pairs of phases on one server: a single p99 of a few thousand probes moves by 2x
        # between runs on a shared host, so the ratio is of the medians over the pairs.
        results["pairs"] = []
        with serve(bundle, a, []) as srv:
            for i in range(a.pairs):
                n = f"{i + 1}/{a.pairs}"
                log(f"alone ({n}): short requests at {a.probe_rate}/s for {a.seconds} s")
                alone = short_phase(srv, a)
                log(f"stream ({n}): {a.stream_clients} client(s) of {a.doc_tokens}-token documents")
                results["pairs"].append({"alone": alone, "stream": stream_phase(srv, a, doc)})
        if a.contrast:
            with serve(bundle, a, ["--long-workers", "0"]) as srv:
                log("nolane: the same stream with --long-workers 0")
                results["nolane"] = stream_phase(srv, a, doc)
        results["load_average_after"] = os.getloadavg()
    p99 = {
        phase: [x[phase]["short"].get("p99_ms") for x in results["pairs"]]
        for phase in ("alone", "stream")
    }
    if all(v is not None for v in p99["alone"] + p99["stream"]):
        results["p99_ms_median"] = {k: statistics.median(v) for k, v in p99.items()}
        med = results["p99_ms_median"]
        results["p99_ratio"] = med["stream"] / med["alone"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    phases = [
        (f"pair {i + 1} {k}", v) for i, pair in enumerate(results["pairs"]) for k, v in pair.items()
    ]
    if "nolane" in results:
        phases.append(("nolane", results["nolane"]))
    for name, phase in phases:
        log(f"{name}: short {phase['short']}")
        if "documents" in phase:
            log(f"{name}: documents {phase['documents']}")
    if "p99_ratio" in results:
        med, ratio = results["p99_ms_median"], results["p99_ratio"]
        log(f"short p99, median of {a.pairs}: alone {med['alone']:.1f} ms, stream "
            f"{med['stream']:.1f} ms; stream / alone = {ratio:.2f} (target <= 1.25)")  # fmt: skip
    log(f"CPU: {results['machine']['cpu']}")
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
