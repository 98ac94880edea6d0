"""HTTP traffic for scripts/check-compose, to the service's published port on 127.0.0.1 only.

    python3 client.py long-doc PORT               late chunking of one long document
    python3 client.py load PORT SECONDS CONC      a short mixed load; prints the answers by status
    python3 client.py inflight PORT N OUT         N slow requests at once; their outcomes go to OUT

Standard library only (the host's python3). Every loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import threading
import time
from collections import Counter

WORDS = (
    "the committee reviewed the annual report on river pollution and asked the city to publish "
    "weekly measurements of nitrate levels near the old paper mill while farmers upstream "
    "argued that the new limits would raise the price of grain and force smaller farms to sell "
    "their land to larger cooperatives before the next harvest season began in the valley"
).split()


def text(words: int, seed: int) -> str:
    """A deterministic English-like text of `words` words."""
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words))


def post(port: int, path: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else {})
    finally:
        conn.close()


def long_doc(port: int) -> None:
    """One ~3,000-token document with chunking: one vector per chunk, spans in order."""
    doc = text(3000, 1)
    start = time.monotonic()
    status, body = post(
        port, "/v1/embed", {"inputs": [doc], "chunking": {"tokens": 256, "overlap": 32}}
    )
    secs = time.monotonic() - start
    assert status == 200, f"/v1/embed with chunking answered {status}: {str(body)[:300]}"
    chunks, dim = body["chunks"][0], body["dimensions"]
    tokens = body["usage"]["prompt_tokens"]
    assert tokens > 2048, (
        f"only {tokens} tokens: not a long document (the long-input lane starts at 2048)"
    )
    want = math.ceil((tokens - 2 - 32) / (256 - 32))  # text tokens (no [CLS]/[SEP]) in windows
    assert abs(len(chunks) - want) <= 1, (
        f"{len(chunks)} chunks for {tokens} tokens, want about {want}"
    )
    assert all(len(c["embedding"]) == dim for c in chunks), "a chunk vector of the wrong size"
    starts = [c["start"] for c in chunks]
    assert starts == sorted(starts) and chunks[-1]["end"] <= len(doc), "chunk spans out of order"
    print(
        f"{tokens} tokens -> {len(chunks)} chunks of 256 (overlap 32) x {dim} dims in {secs:.2f} s"
    )


def load(port: int, seconds: float, concurrency: int) -> None:
    """Closed loop, mixed lengths (1 to 32 texts of 8 to 200 words), for `seconds`."""
    deadline = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline and i < 100_000:
            i += 1
            k = (n * 31 + i * 17) % 32 + 1
            inputs = [text(8 + (j * 37 + i) % 192, n + i + j) for j in range(k)]
            try:
                status, _ = post(port, "/v1/embed", {"inputs": inputs})
                key = str(status)
            except OSError as e:
                key = type(e).__name__
            with lock:
                counts[key] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    print(json.dumps(dict(counts)))


def inflight(port: int, n: int, out: str) -> None:
    """N requests at once, each slow enough (16 texts of ~250 words) to be running when the
    service is told to stop. Writes one outcome per request: the status or the error."""
    outcomes: list[str] = [""] * n

    def one(i: int) -> None:
        inputs = [text(240 + j, i * 100 + j) for j in range(16)]
        try:
            status, _ = post(port, "/v1/embed", {"inputs": inputs}, timeout=90)
            outcomes[i] = str(status)
        except OSError as e:
            outcomes[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with open(out, "w") as f:
        f.write("\n".join(o or "no answer within 120 s" for o in outcomes) + "\n")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "long-doc":
        long_doc(int(args[0]))
    elif cmd == "load":
        load(int(args[0]), float(args[1]), int(args[2]))
    elif cmd == "inflight":
        inflight(int(args[0]), int(args[1]), args[2])
    else:
        sys.exit(__doc__)
