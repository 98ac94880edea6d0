"""Two models in one aft-serve against one, on the same CPUs: total throughput under load.

    python bench/two_models.py [--seconds 15] [--connections 8] [--rounds 2]

Starts aft-serve (target/release/aft-serve) with models/aft-mini alone, then with aft-mini twice
(the second as `mini-b`, its own queue and worker), both with the default thread split (CPUs /
all workers). Each run sends `--connections` closed-loop oha clients of 8-text /v1/embed requests
for `--seconds`: all to the one model, or half to each of the two. Runs alternate (one, two, one,
two...) so that background load on a shared machine falls on both alike; prints inputs/s per run
and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from harness.results import cpu
from harness.serve_process import ServeProcess

TEXTS = [
    "the committee approved the budget for the new library",
    "a cat sat on the mat and watched the rain",
    "install the package and restart the service before testing",
    "the river flooded the valley after three days of storms",
    "she plays the violin in a small orchestra on weekends",
    "prices rose sharply as the harvest failed across the region",
    "the compiler reports an error when a type cannot be inferred",
    "he walked along the beach collecting shells and driftwood",
]
COMMON = ["--workers", "1", "--max-batch-tokens", "2048", "--log-level", "warn"]


def oha(url: str, model: str | None, connections: int, seconds: int) -> subprocess.Popen:
    body = {"inputs": TEXTS} | ({"model": model} if model else {})
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s"]
    cmd += ["-c", str(connections), "-m", "POST", "-T", "application/json"]
    cmd += ["-d", json.dumps(body), url + "/v1/embed"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def run(models: list[str], names: list[str | None], connections: int, seconds: int) -> float:
    """Inputs per second served, summed over the models; fails on any non-200 answer."""
    args = [a for m in models for a in ("--model-dir", m)] + COMMON
    with ServeProcess(args=args, ready_timeout=300) as srv:
        share = connections // len(names)
        procs = [oha(srv.url, name, share, seconds) for name in names]
        total = 0.0
        for proc in procs:
            out, _ = proc.communicate()
            result = json.loads(out)
            codes = result["statusCodeDistribution"]
            if set(codes) != {"200"}:
                raise SystemExit(f"non-200 answers: {codes}")
            total += result["summary"]["requestsPerSec"] * len(TEXTS)
        return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    one, two = [], []
    for r in range(a.rounds):
        one.append(run(["models/aft-mini"], [None], a.connections, a.seconds))
        print(f"round {r}: one model  {one[-1]:8.1f} inputs/s", flush=True)
        two.append(
            run(
                ["models/aft-mini", "mini-b=models/aft-mini"],
                ["aft-mini", "mini-b"],
                a.connections,
                a.seconds,
            )
        )
        print(f"round {r}: two models {two[-1]:8.1f} inputs/s", flush=True)
    m1, m2 = statistics.median(one), statistics.median(two)
    print(f"median: one {m1:.1f}, two {m2:.1f} inputs/s; two/one = {m2 / m1:.3f}")
    print(f"CPU: {cpu()['cpu']}")


if __name__ == "__main__":
    main()
